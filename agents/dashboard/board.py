"""What the admin page shows, as data: the live views' state (`streams.views.FleetView`,
the fold `replay` uses, followed by agents/audit/follow.py), cut to one tenant's part in one
place (`Board.snapshot`, `Board.timeline`) so no view can forget the cut.

Everything here costs the fleet, not the history: fleet tiles come from counts kept per
state, the connector table lists the connectors that are not healthy (and the healthy ones
too while the scope has at most `CONNECTOR_ROWS`), incidents are the open ones and the last
few closed, trends come from the view's per-window figures, and a connector's timeline is
read from the audit topic when it is opened (`Timelines`).

Display states of a connector, first match wins: retired, flapping, silenced (notifications
suppressed until a time still ahead), recovering (an attempt in flight), failing, healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.audit.follow import AuditFollower
from agents.broker.client import client_options, describe, reader, start_client, topic_partitions
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, registry
from agents.wire.records import decode_audit
from streams.models import AuditEvent
from streams.projections import tenant_key
from streams.state import Phase, Record
from streams.timefmt import iso_from_ms
from streams.views import STATES, FleetView, OpenEpisode, display_state

log = logging.getLogger("connector_recovery.dashboard")

# A connector's timeline shows its newest events (the chain verdict covers all of them).
TIMELINE_LENGTH = 100
# The connector table lists every connector of a scope of at most this many; of a larger
# one, this many of those that are not healthy (the page says how many it leaves out).
CONNECTOR_ROWS = 500
# Broker figures (dead letters, inputs lag) are read at most this often, and only on demand.
BROKER_FIGURES_TTL_S = 2.0

__all__ = ["STATES", "Board", "Scope", "display_state", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Scope:
    """What one user may see: one tenant (its key), or everything (`tenant` None)."""

    tenant: str | None = None

    def covers(self, tenant_id: str | None) -> bool:
        return self.tenant is None or tenant_key(tenant_id) == self.tenant


class TimelineSource(Protocol):
    async def newest(self, connector_id: str, limit: int) -> list[tuple[str, AuditEvent]]:
        """The connector's newest `limit` audit events with their log positions, newest
        first."""
        ...


class Board:
    def __init__(
        self,
        settings: Settings,
        follower: AuditFollower,
        timelines: TimelineSource | None = None,
    ) -> None:
        self.settings = settings
        self.follower = follower
        follower.on_event = self.on_event
        follower.on_view = self.on_view
        self.timelines = timelines if timelines is not None else Timelines(settings, follower)
        # Change counters per tenant key: a tenant admin's page is woken by their tenant only.
        self.versions: dict[str, int] = {}
        self._views_replaced = 0  # every tenant's page changes when the view is replaced whole
        self._changed = asyncio.Event()
        self.broker = BrokerFigures(settings)

    @property
    def view(self) -> FleetView:
        return self.follower.view

    # -- following ------------------------------------------------------------------------
    def on_event(self, _position: str, event: AuditEvent) -> None:
        key = tenant_key(event.tenant_id)
        self.versions[key] = self.versions.get(key, 0) + 1
        self.notify()

    def on_view(self) -> None:
        self._views_replaced += 1
        self.notify()

    def notify(self) -> None:
        """Wake everyone waiting in `wait_for_change`."""
        self._changed.set()
        self._changed = asyncio.Event()

    def version(self, scope: Scope) -> int:
        if scope.tenant is not None:
            return self._views_replaced + self.versions.get(scope.tenant, 0)
        return self._views_replaced + sum(self.versions.values())

    async def wait_for_change(self, timeout_s: float) -> bool:
        """True if something changed (or `notify` was called) within the timeout."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- reading --------------------------------------------------------------------------
    def visible(self, scope: Scope, connector_id: str) -> Record | None:
        record = self.view.records.get(connector_id)
        return record if record is not None and scope.covers(record.tenant_id) else None

    def snapshot(self, scope: Scope) -> dict[str, Any]:
        now = now_ms()
        view = self.view
        counts = view.fleet_counts(scope.tenant, now)
        total = sum(counts.values())
        if total <= CONNECTOR_ROWS:
            listed: Iterable[Record] = (
                r for r in view.records.values() if scope.covers(r.tenant_id)
            )
        else:  # the ones that need a look, up to the limit
            listed = itertools.islice(
                (
                    r
                    for r in view.not_healthy()
                    if scope.covers(r.tenant_id) and display_state(r, now) != "healthy"
                ),
                CONNECTOR_ROWS,
            )
        rows = sorted(
            (self._connector_row(record, now) for record in listed),
            key=lambda row: row["connector_id"],
        )
        fleet: dict[str, int | None] = dict(counts)
        open_incidents = view.open_incidents(scope.tenant)
        fleet["open_incidents"] = len(open_incidents)
        fleet["unacknowledged"] = sum(1 for e in open_incidents if e.acknowledged_at is None)
        # Dead letters and the inputs lag belong to no tenant: only the platform sees them.
        platform = scope.tenant is None
        fleet["dead_letters"] = self.broker.figures.get("dead_letters") if platform else None
        fleet["inputs_lag"] = self.broker.figures.get("inputs_lag") if platform else None
        progress = self.follower.progress
        tenants = view.tenant_keys()
        return {
            "scope": scope.tenant or "all tenants",
            "generated_at": iso_from_ms(now),
            "caught_up": self.follower.caught_up.is_set(),
            "problem": self.follower.problem,
            "folded": progress.restored_events + progress.read,
            "to_fold": progress.restored_events + progress.total,
            "undecodable": progress.undecodable,
            "fleet": fleet,
            "tenants": [t for t in tenants if scope.tenant is None or t == scope.tenant],
            "connectors_total": total,
            "connectors": rows,
            "incidents": self._incidents(open_incidents, view.recently_closed(scope.tenant), now),
            "outages": self._outages(scope, now),
            "trends": self._trends(scope),
        }

    def _connector_row(self, record: Record, now: int) -> dict[str, Any]:
        state = display_state(record, now)
        since = self.view.since.get(record.connector_id)
        return {
            "connector_id": record.connector_id,
            "tenant": tenant_key(record.tenant_id),
            "state": state,
            "since": iso_from_ms(since if since is not None else record.last_occurred_at),
            "failure": record.failure,
            "attempts": record.attempts,
            "episode": record.incident_id if record.phase is Phase.FAILED else None,
        }

    @staticmethod
    def _incidents(
        open_incidents: list[OpenEpisode], closed: list[OpenEpisode], now: int
    ) -> list[dict[str, Any]]:
        ordered = sorted(open_incidents, key=lambda e: -(e.opened_at or 0)) + closed
        rows = []
        for episode in ordered:
            opened = episode.opened_at or episode.detected_at
            ended = now if episode.incident_open else (episode.resolved_at or now)
            rows.append(
                {
                    "incident_id": episode.incident_id,
                    "connector_id": episode.connector_id,
                    "tenant": tenant_key(episode.tenant_id),
                    "failure": episode.failure,
                    "open": episode.incident_open,
                    "opened_at": iso_from_ms(opened),
                    "age_s": max(0, (ended - opened) // 1000),
                    "escalation_level": episode.escalation_level,
                    "acknowledged_by": episode.acknowledged_by
                    if episode.acknowledged_at is not None
                    else None,
                }
            )
        return rows

    def may_act_on_outage(self, scope: Scope, outage_id: str) -> bool | None:
        """Whether the scope may act on the open outage (None: it does not see it). A
        tenant's outage is its tenant's; a dependency's may span tenants: the platform's
        alone (a tenant admin acts on their own connectors of it)."""
        outage = self.view.outages.get(outage_id)
        if outage is None:
            return None
        if scope.tenant is None:
            return True
        if outage.tenant_id is not None:
            return scope.covers(outage.tenant_id) or None
        seen = any(
            record is not None and scope.covers(record.tenant_id)
            for record in map(self.view.records.get, dict.fromkeys(outage.connectors))
        )
        return False if seen else None

    def _outages(self, scope: Scope, now: int) -> list[dict[str, Any]]:
        """The open outages the scope has a connector in (a dependency's outage may span
        tenants: a tenant sees it with its own connectors only), newest first, each with
        its connectors (at most `CONNECTOR_ROWS`) and their states now."""
        rows = []
        for outage in sorted(self.view.open_outages(), key=lambda o: -o.opened_at):
            members = [
                record
                for record in map(self.view.records.get, dict.fromkeys(outage.connectors))
                if record is not None and scope.covers(record.tenant_id)
            ]
            if not members:
                continue
            failing = sum(1 for r in members if r.phase is Phase.FAILED)
            rows.append(
                {
                    "outage_id": outage.outage_id,
                    "group": outage.group,
                    "tenant": None if outage.tenant_id is None else tenant_key(outage.tenant_id),
                    "opened_at": iso_from_ms(outage.opened_at),
                    "age_s": max(0, (now - outage.opened_at) // 1000),
                    "connectors_total": len(members),
                    "failing": failing,
                    # a dependency's outage spans tenants: only a platform user acts on it
                    "actionable": scope.tenant is None or outage.tenant_id is not None,
                    "connectors": [
                        {"connector_id": r.connector_id, "state": display_state(r, now)}
                        for r in members[:CONNECTOR_ROWS]
                    ],
                }
            )
        return rows

    def _trends(self, scope: Scope) -> dict[str, Any]:
        """Per tenant and time window (by detection): failures, and MTTR mean, p50 and p90."""
        width_s, per_tenant = self.view.trends(scope.tenant)
        return {
            "window_s": width_s,
            "tenants": {
                key: [
                    {
                        "start": iso_from_ms(start),
                        "failures": figures.failures,
                        "mttr_mean_s": figures.mttr_seconds(None),
                        "mttr_p50_s": figures.mttr_seconds(50),
                        "mttr_p90_s": figures.mttr_seconds(90),
                    }
                    for start, figures in windows
                ]
                for key, windows in per_tenant.items()
            },
        }

    async def timeline(self, scope: Scope, connector_id: str) -> dict[str, Any] | None:
        """A connector's newest audit events with the chain verdict; None if out of scope."""
        record = self.visible(scope, connector_id)
        if record is None:
            return None
        events = await self.timelines.newest(connector_id, TIMELINE_LENGTH)
        # A connector is scoped by its latest tenant; each event by its own as well, so a log
        # in which a connector changed tenants shows neither tenant the other's events.
        shown = [(p, e) for p, e in events if scope.covers(e.tenant_id)]
        problem = self.view.chain_problems.get(connector_id)
        return {
            "connector_id": connector_id,
            "tenant": tenant_key(record.tenant_id),
            "state": display_state(record, now_ms()),
            "chain": {
                "verdict": "intact" if problem is None else "broken",
                "problem": problem,
                "events_checked": record.sequence,
            },
            "earlier_events_not_shown": max(0, record.sequence - len(events)),
            "events": [
                {
                    "position": position,
                    "sequence": event.sequence,
                    "type": event.type.value,
                    "occurred_at": iso_from_ms(event.occurred_at),
                    "incident_id": event.incident_id,
                    "attempt": event.attempt,
                    "mode": event.mode.value if event.mode else None,
                    "actor": event.actor,
                    "failure": event.failure,
                    "attributes": dict(sorted(event.attributes.items())),
                    "hash": event.hash,
                }
                for position, event in shown
            ],
        }

    async def close(self) -> None:
        """Wake every waiter (their streams end) and stop reading the broker."""
        self.notify()
        await self.broker.close()
        if isinstance(self.timelines, Timelines):
            await self.timelines.close()


class Timelines:
    """A connector's newest events, read from the audit topic at the positions the
    follower's timeline index gives, through one consumer kept open between reads (one
    read at a time)."""

    def __init__(self, settings: Settings, follower: AuditFollower) -> None:
        self.settings = settings
        self.follower = follower
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._codec = registry()

    async def newest(self, connector_id: str, limit: int) -> list[tuple[str, AuditEvent]]:
        where = self.follower.timeline_positions(connector_id, limit)
        if not where:
            return []
        async with self._lock:
            found = await self._read({(partition, offset) for _, partition, offset in where})
        events = []
        for _sequence, partition, offset in where:
            value = found.get((partition, offset))
            if value is None:
                continue  # no longer in the topic (retention): the timeline shows the rest
            try:
                events.append((f"{partition}/{offset}", decode_audit(self._codec, value)))
            except (AvroCodecError, ValidationError, ValueError):
                continue
        return events

    async def _read(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        consumer = await self._open()
        topic = self.follower.topic
        tps = [TopicPartition(topic, p) for p in sorted({p for p, _ in wanted})]
        consumer.assign(tps)
        found: dict[tuple[int, int], bytes] = {}
        for tp in tps:
            pending = sorted(o for p, o in wanted if p == tp.partition)
            while pending:
                consumer.seek(tp, pending[0])
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=200)
                records = batch.get(tp, [])
                if not records:
                    break
                for record in records:
                    if record.value is not None:
                        found[(tp.partition, record.offset)] = record.value
                last = records[-1].offset
                pending = [o for o in pending if o > last]
        return found

    async def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = reader(self.settings, bounded=True)
            await start_client(consumer)
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


class BrokerFigures:
    """Records on the dead-letter topic, and inputs the workers' groups have not committed yet
    (the router's group on the external topics, the decider's on the inputs topic). Read in
    the background at most every `BROKER_FIGURES_TTL_S`, and only while someone looks, through
    one consumer and one admin client kept open between reads: opening them costs more than
    a read. An unreachable broker leaves the last figures in place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.figures: dict[str, int] = {}
        self._read_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._clients: tuple[AIOKafkaConsumer, AIOKafkaAdminClient] | None = None

    def request(self) -> None:
        """A page never waits for the broker: this starts a read if the figures are old."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self._read_at < BROKER_FIGURES_TTL_S:
            return
        self._read_at = time.monotonic()
        self._task = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_clients()

    async def _read(self) -> None:
        try:
            self.figures = await asyncio.wait_for(self._figures(), 10)
        except Exception as error:  # the last figures stay; the page goes on
            log.warning("cannot read dead letters and lag: %s", describe(error))
            await self._drop_clients()

    async def _drop_clients(self) -> None:
        if self._clients is not None:
            consumer, admin = self._clients
            self._clients = None
            await consumer.stop()
            await admin.close()

    async def _figures(self) -> dict[str, int]:
        if self._clients is None:
            consumer = reader(self.settings)
            admin = AIOKafkaAdminClient(**client_options(self.settings))
            self._clients = (consumer, admin)
            await consumer.start()
            await admin.start()
        consumer, admin = self._clients
        topics = self.settings.topics
        dlq = await topic_partitions(consumer, topics.dlq)
        starts = await consumer.beginning_offsets(dlq) if dlq else {}
        ends = await consumer.end_offsets(dlq) if dlq else {}
        dead_letters = sum(ends[tp] - starts[tp] for tp in dlq)
        lag = 0
        for group, names in (
            (
                f"{self.settings.app_id}-router",
                (topics.health, topics.admin, topics.recovery_results),
            ),
            (self.settings.app_id, (self.settings.inputs_topic,)),
        ):
            committed = await admin.list_consumer_group_offsets(group)
            tps: list[TopicPartition] = []
            for name in names:
                tps.extend(await topic_partitions(consumer, name))
            if not tps:
                continue
            heads = await consumer.end_offsets(tps)
            beginnings = await consumer.beginning_offsets(tps)
            for tp in tps:
                done = committed[tp].offset if tp in committed else -1
                lag += max(0, heads[tp] - (done if done >= 0 else beginnings[tp]))
        return {"dead_letters": dead_letters, "inputs_lag": lag}
