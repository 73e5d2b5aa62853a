"""What the admin page shows, as data: the follower's `LiveProjection` (the fold `replay`
uses) plus per-connector timelines kept from `on_event`, cut to one tenant's part in one
place (`Board.snapshot`, `Board.timeline`) so no view can forget the cut.

Display states of a connector, first match wins: retired, flapping, silenced (notifications
suppressed until a time still ahead), recovering (an attempt in flight), failing, healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from agents.audit.follow import AuditFollower
from agents.audit.live import LiveProjection
from agents.broker.client import client_options, describe, reader, topic_partitions
from agents.settings import Settings
from streams.chain import event_hash
from streams.models import GENESIS_HASH, AuditEvent, EventType
from streams.projections import Episode, tenant_key, totals
from streams.state import Phase, Record
from streams.timefmt import iso_from_ms

log = logging.getLogger("connector_recovery.dashboard")

STATES = ("healthy", "failing", "recovering", "flapping", "silenced", "retired")
# Per connector, the newest audit events kept for its timeline (the fold keeps the rest).
TIMELINE_LENGTH = 500
# Closed incidents listed under the open ones.
RECENT_CLOSED = 20
# Trend windows: the narrowest giving at most MAX_WINDOWS windows over the visible history.
WINDOW_LADDER_S = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
MAX_WINDOWS = 24
# Broker figures (dead letters, inputs lag) are read at most this often, and only on demand.
BROKER_FIGURES_TTL_S = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def display_state(record: Record, now: int) -> str:
    if record.phase is Phase.RETIRED:
        return "retired"
    if record.flapping:
        return "flapping"
    if record.silenced_until is not None and record.silenced_until > now:
        return "silenced"
    if record.phase is Phase.FAILED:
        return "recovering" if record.attempt_in_flight is not None else "failing"
    return "healthy"


@dataclass
class Trail:
    """One connector's recent audit events and the verdict on its hash chain so far."""

    events: deque[tuple[str, AuditEvent]] = field(
        default_factory=lambda: deque(maxlen=TIMELINE_LENGTH)
    )
    head_sequence: int = 0
    head_hash: str = GENESIS_HASH
    chain_problem: str | None = None
    state: str = "healthy"
    since: int = 0

    def check_link(self, event: AuditEvent) -> None:
        if self.chain_problem is None:
            if event.sequence != self.head_sequence + 1:
                self.chain_problem = (
                    f"sequence {event.sequence} follows {self.head_sequence}: events are missing"
                )
            elif event.prev_hash != self.head_hash:
                self.chain_problem = f"sequence {event.sequence} does not link to its predecessor"
            elif event_hash(event) != event.hash:
                self.chain_problem = f"sequence {event.sequence} does not match its hash"
        self.head_sequence, self.head_hash = event.sequence, event.hash


@dataclass(frozen=True)
class Scope:
    """What one user may see: one tenant (its key), or everything (`tenant` None)."""

    tenant: str | None = None

    def covers(self, tenant_id: str | None) -> bool:
        return self.tenant is None or tenant_key(tenant_id) == self.tenant


# Events that tell who was told of an incident: their `level` is 0 for the Platform Admin,
# k for escalation step k.
_LEVELLED = (EventType.INCIDENT_OPENED, EventType.INCIDENT_ESCALATED)


class Board:
    def __init__(self, settings: Settings, live: LiveProjection) -> None:
        self.settings = settings
        self.live = live
        self.follower = AuditFollower(settings, live, on_event=self.on_event)
        self.trails: dict[str, Trail] = {}
        self.acknowledged_by: dict[str, str] = {}
        self.escalation_level: dict[str, int] = {}
        # Change counters per tenant key: a tenant admin's page is woken by their tenant only.
        self.versions: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.broker = BrokerFigures(settings)

    # -- following ------------------------------------------------------------------------
    def on_event(self, position: str, event: AuditEvent) -> None:
        trail = self.trails.setdefault(event.connector_id, Trail())
        trail.events.append((position, event))
        trail.check_link(event)
        if event.type is EventType.INCIDENT_ACKNOWLEDGED and event.incident_id:
            self.acknowledged_by[event.incident_id] = event.actor or "?"
        elif event.type in _LEVELLED and event.incident_id:
            self.escalation_level[event.incident_id] = int(event.attributes.get("level", "0"))
        state = display_state(self.live.projection.records[event.connector_id], now_ms())
        if state != trail.state or not trail.since:
            trail.state, trail.since = state, event.occurred_at
        key = tenant_key(event.tenant_id)
        self.versions[key] = self.versions.get(key, 0) + 1
        self.notify()

    def notify(self) -> None:
        """Wake everyone waiting in `wait_for_change`."""
        self._changed.set()
        self._changed = asyncio.Event()

    def version(self, scope: Scope) -> int:
        if scope.tenant is not None:
            return self.versions.get(scope.tenant, 0)
        return sum(self.versions.values())

    async def wait_for_change(self, timeout_s: float) -> bool:
        """True if something changed (or `notify` was called) within the timeout."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- reading --------------------------------------------------------------------------
    def records(self, scope: Scope) -> list[Record]:
        return [
            record
            for _, record in sorted(self.live.projection.records.items())
            if scope.covers(record.tenant_id)
        ]

    def episodes(self, scope: Scope) -> list[Episode]:
        return [e for e in self.live.projection.episodes.values() if scope.covers(e.tenant_id)]

    def visible(self, scope: Scope, connector_id: str) -> Record | None:
        record = self.live.projection.records.get(connector_id)
        return record if record is not None and scope.covers(record.tenant_id) else None

    def snapshot(self, scope: Scope) -> dict[str, Any]:
        now = now_ms()
        records = self.records(scope)
        episodes = self.episodes(scope)
        connectors = [self._connector_row(record, now) for record in records]
        fleet: dict[str, int | None] = dict.fromkeys(STATES, 0)
        for row in connectors:
            fleet[row["state"]] = (fleet[row["state"]] or 0) + 1
        incidents = self._incidents(episodes, now)
        open_incidents = [i for i in incidents if i["open"]]
        fleet["open_incidents"] = len(open_incidents)
        fleet["unacknowledged"] = sum(1 for i in open_incidents if not i["acknowledged_by"])
        # Dead letters and the inputs lag belong to no tenant: only the platform sees them.
        platform = scope.tenant is None
        fleet["dead_letters"] = self.broker.figures.get("dead_letters") if platform else None
        fleet["inputs_lag"] = self.broker.figures.get("inputs_lag") if platform else None
        progress = self.follower.progress
        return {
            "scope": scope.tenant or "all tenants",
            "generated_at": iso_from_ms(now),
            "caught_up": self.follower.caught_up.is_set(),
            "folded": progress.read,
            "to_fold": progress.total,
            "fleet": fleet,
            "tenants": sorted({tenant_key(r.tenant_id) for r in records}),
            "connectors": connectors,
            "incidents": incidents,
            "trends": trends(episodes),
        }

    def _connector_row(self, record: Record, now: int) -> dict[str, Any]:
        trail = self.trails.get(record.connector_id)
        state = display_state(record, now)
        since = trail.since if trail is not None and trail.state == state else None
        return {
            "connector_id": record.connector_id,
            "tenant": tenant_key(record.tenant_id),
            "state": state,
            "since": iso_from_ms(since or record.last_occurred_at),
            "failure": record.failure,
            "attempts": record.attempts,
            "episode": record.incident_id if record.phase is Phase.FAILED else None,
        }

    def _incidents(self, episodes: Iterable[Episode], now: int) -> list[dict[str, Any]]:
        with_incident = [e for e in episodes if e.opened_at is not None]
        ordered = sorted(with_incident, key=lambda e: (not e.incident_open, -(e.opened_at or 0)))
        open_count = sum(1 for e in with_incident if e.incident_open)
        rows = []
        for episode in ordered[: open_count + RECENT_CLOSED]:
            opened = episode.opened_at or episode.detected_at
            ended = episode.resolved_at if not episode.incident_open else now
            rows.append(
                {
                    "incident_id": episode.incident_id,
                    "connector_id": episode.connector_id,
                    "tenant": tenant_key(episode.tenant_id),
                    "failure": episode.failure,
                    "open": episode.incident_open,
                    "opened_at": iso_from_ms(opened),
                    "age_s": max(0, ((ended or now) - opened) // 1000),
                    "escalation_level": self.escalation_level.get(episode.incident_id),
                    "acknowledged_by": self.acknowledged_by.get(episode.incident_id)
                    if episode.acknowledged_at is not None
                    else None,
                }
            )
        return rows

    def timeline(self, scope: Scope, connector_id: str) -> dict[str, Any] | None:
        """A connector's audit events with the chain verdict; None if out of scope."""
        record = self.visible(scope, connector_id)
        if record is None:
            return None
        trail = self.trails.get(connector_id, Trail())
        # A connector is scoped by its latest tenant; each event by its own as well, so a log
        # in which a connector changed tenants shows neither tenant the other's events.
        shown = [(p, e) for p, e in trail.events if scope.covers(e.tenant_id)]
        return {
            "connector_id": connector_id,
            "tenant": tenant_key(record.tenant_id),
            "state": display_state(record, now_ms()),
            "chain": {
                "verdict": "intact" if trail.chain_problem is None else "broken",
                "problem": trail.chain_problem,
                "events_checked": trail.head_sequence,
            },
            "earlier_events_not_shown": max(0, trail.head_sequence - len(trail.events)),
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
                for position, event in reversed(shown)
            ],
        }

    async def close(self) -> None:
        """Wake every waiter (their streams end) and stop reading the broker."""
        self.notify()
        await self.broker.close()


def trends(episodes: list[Episode]) -> dict[str, Any]:
    """Per tenant and time window (by detection): failures, and MTTR mean, p50 and p90."""
    if not episodes:
        return {"window_s": None, "tenants": {}}
    first = min(e.detected_at for e in episodes)
    last = max(e.detected_at for e in episodes)
    width_s = next(
        (w for w in WINDOW_LADDER_S if (last - first) // (w * 1000) < MAX_WINDOWS),
        WINDOW_LADDER_S[-1],
    )
    width_ms = width_s * 1000
    start = first - first % width_ms
    windows = range(start, last + 1, width_ms)
    per_tenant: dict[str, dict[int, list[Episode]]] = {}
    for episode in episodes:
        window = episode.detected_at - episode.detected_at % width_ms
        tenant = per_tenant.setdefault(tenant_key(episode.tenant_id), {})
        tenant.setdefault(window, []).append(episode)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, grouped in sorted(per_tenant.items()):
        points = []
        for window in windows:
            figures = totals(grouped.get(window, []))
            mttr = figures.mttr_seconds
            points.append(
                {
                    "start": iso_from_ms(window),
                    "failures": figures.failure_count,
                    "mttr_mean_s": mttr.mean,
                    "mttr_p50_s": mttr.p50,
                    "mttr_p90_s": mttr.p90,
                }
            )
        out[name] = points
    return {"window_s": width_s, "tenants": out}


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
