"""Live views as state: what `/metrics`, `/status` and the admin page show, folded from the
audit log into a structure whose size follows the fleet, not the history behind it.

A `FleetView` holds, and only holds:
* the state of record of every connector (`evolve`, the fold `replay` uses), which is also
  each connector's chain head (re-deliveries at or below it are skipped);
* the episodes still open (detected and not yet recovered, or an incident not yet resolved);
* per tenant, all-time figures and trend windows: counts and sums exactly, MTTR percentiles
  in a `Sketch` (relative error at most `RELATIVE_ACCURACY`; `replay` and `report` stay
  exact), the Prometheus histogram's buckets exactly;
* the last `RECENT_CLOSED` closed incidents per tenant, and per connector what a person
  needs beside the record: since when it is in its display state (only while it is not
  healthy), and the first broken link of its hash chain, if any.

Its size is O(connectors + open episodes + tenants x trend windows). `snapshot()` turns it
into plain data (JSON-able) and `FleetView.restore` back; a view restored from a snapshot
taken at some position and then fed the events after it equals the view fed every event
(tests/core/test_views.py holds both against each other, and against `Projection`).

A connector whose only events are `command.rejected` (an admin command naming an unknown
connector) is not part of the fleet: it is kept aside, for its chain head only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from streams.chain import event_hash
from streams.evolve import evolve
from streams.grouping import is_outage_key
from streams.models import GENESIS_HASH, AuditEvent, EventType, RecoveryMode
from streams.projections import OUTAGE_TYPES, Outage, apply_outage_event, tenant_key
from streams.state import DisplayState, Phase, Record

FORMAT = 1
MTTR_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
# Percentiles of the live views are within 1% of the exact nearest-rank value (DDSketch's
# guarantee for its log-spaced buckets); counts, sums and means are exact.
RELATIVE_ACCURACY = 0.01
# Trend windows: the narrowest giving at most MAX_WINDOWS windows over a scope's history.
WINDOW_LADDER_S = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
MAX_WINDOWS = 24
RECENT_CLOSED = 20

STATES = tuple(DisplayState)

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


class Sketch:
    """A mergeable quantile sketch of non-negative durations in milliseconds (DDSketch,
    Masson et al. 2019): bucket k counts the values in (gamma^(k-1), gamma^k]; a bucket's
    value is the point within 1% of every value in it. Values of 0 ms are counted apart."""

    __slots__ = ("buckets", "count", "zeros")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def add(self, value_ms: int) -> None:
        self.count += 1
        if value_ms <= 0:
            self.zeros += 1
            return
        key = math.ceil(math.log(value_ms) / _LOG_GAMMA)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def quantile_ms(self, percentile: float) -> float | None:
        """The nearest-rank percentile (as `projections.nearest_rank`), within 1%."""
        if not self.count:
            return None
        rank = max(1, math.ceil(percentile / 100 * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return 2 * _GAMMA**key / (_GAMMA + 1)
        raise AssertionError("a sketch's buckets add up to its count")

    def to_wire(self) -> list[Any]:
        return [self.zeros, sorted(self.buckets.items())]

    @staticmethod
    def from_wire(wire: list[Any]) -> Sketch:
        sketch = Sketch()
        sketch.zeros = int(wire[0])
        sketch.buckets = {int(key): int(n) for key, n in wire[1]}
        sketch.count = sketch.zeros + sum(sketch.buckets.values())
        return sketch


class Figures:
    """Failure episodes of one tenant (all time, or one trend window): how many were
    detected and recovered, and their times to recover."""

    __slots__ = ("failures", "mttr", "mttr_total_ms", "recovered")

    def __init__(self) -> None:
        self.failures = 0
        self.recovered = 0
        self.mttr_total_ms = 0
        self.mttr = Sketch()

    def add_recovery(self, mttr_ms: int) -> None:
        self.recovered += 1
        self.mttr_total_ms += mttr_ms
        self.mttr.add(mttr_ms)

    def mttr_seconds(self, percentile: float | None) -> float | None:
        """The mean (percentile None) or a percentile of the times to recover, in seconds."""
        if not self.recovered:
            return None
        if percentile is None:
            return self.mttr_total_ms / self.recovered / 1000
        value = self.mttr.quantile_ms(percentile)
        return None if value is None else value / 1000

    def to_wire(self) -> list[Any]:
        return [self.failures, self.recovered, self.mttr_total_ms, self.mttr.to_wire()]

    @staticmethod
    def from_wire(wire: list[Any]) -> Figures:
        figures = Figures()
        figures.failures, figures.recovered, figures.mttr_total_ms = (int(v) for v in wire[:3])
        figures.mttr = Sketch.from_wire(wire[3])
        return figures


class TenantFigures(Figures):
    """A tenant's all-time figures, its MTTR histogram (Prometheus buckets, exact) and its
    trend windows per width of the ladder. A width is dropped for good once the tenant's
    history spans `MAX_WINDOWS` of it: no scope holding the tenant can choose it again."""

    __slots__ = ("first_detected", "histogram", "last_detected", "windows")

    def __init__(self) -> None:
        super().__init__()
        self.histogram = [0] * len(MTTR_BUCKETS_S)
        self.first_detected: int | None = None
        self.last_detected: int | None = None
        self.windows: dict[int, dict[int, Figures]] = {w: {} for w in WINDOW_LADDER_S}

    def detected(self, at: int) -> None:
        self.failures += 1
        first = at if self.first_detected is None else min(self.first_detected, at)
        last = at if self.last_detected is None else max(self.last_detected, at)
        self.first_detected, self.last_detected = first, last
        for width_s in list(self.windows):
            if width_s != WINDOW_LADDER_S[-1] and (last - first) // (width_s * 1000) >= MAX_WINDOWS:
                del self.windows[width_s]
                continue
            self._window(width_s, at).failures += 1

    def recovered_after(self, detected_at: int, mttr_ms: int) -> None:
        self.add_recovery(mttr_ms)
        seconds = mttr_ms / 1000
        for index, bound in enumerate(MTTR_BUCKETS_S):
            if seconds <= bound:
                self.histogram[index] += 1
        for width_s in self.windows:
            self._window(width_s, detected_at).add_recovery(mttr_ms)

    def _window(self, width_s: int, at: int) -> Figures:
        width_ms = width_s * 1000
        windows = self.windows[width_s]
        start = at - at % width_ms
        figures = windows.get(start)
        if figures is None:
            figures = windows[start] = Figures()
        return figures

    def to_wire(self) -> list[Any]:
        return [
            *super().to_wire(),
            self.histogram,
            self.first_detected,
            self.last_detected,
            [
                [width_s, [[start, f.to_wire()] for start, f in sorted(windows.items())]]
                for width_s, windows in self.windows.items()
            ],
        ]

    @staticmethod
    def from_wire(wire: list[Any]) -> TenantFigures:
        figures = TenantFigures()
        base = Figures.from_wire(wire[:4])
        figures.failures, figures.recovered = base.failures, base.recovered
        figures.mttr_total_ms, figures.mttr = base.mttr_total_ms, base.mttr
        figures.histogram = [int(n) for n in wire[4]]
        figures.first_detected, figures.last_detected = wire[5], wire[6]
        figures.windows = {
            int(width_s): {int(start): Figures.from_wire(f) for start, f in windows}
            for width_s, windows in wire[7]
        }
        return figures


class OpenEpisode(NamedTuple):
    """A failure episode that can still change a figure: not yet recovered, or an incident
    not yet resolved. Immutable, so a snapshot can take the episodes as they are at one
    moment and write them while the fold goes on."""

    incident_id: str
    connector_id: str
    tenant_id: str | None
    failure: str | None
    detected_at: int
    recovered: bool = False
    opened_at: int | None = None
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    escalation_level: int | None = None
    resolved_at: int | None = None

    @property
    def incident_open(self) -> bool:
        return self.opened_at is not None and self.resolved_at is None


def closing_order(episode: OpenEpisode) -> tuple[int, int, str]:
    """Which closed incidents are the latest: resolved last, then opened last, then by id."""
    return (episode.resolved_at or 0, episode.opened_at or 0, episode.incident_id)


def base_state(record: Record) -> DisplayState:
    """A connector's display state, silence aside (it depends on the time of asking)."""
    if record.phase is Phase.RETIRED:
        return DisplayState.RETIRED
    if record.flapping:
        return DisplayState.FLAPPING
    if record.phase is Phase.FAILED:
        if record.attempt_in_flight is not None:
            return DisplayState.RECOVERING
        return DisplayState.FAILING
    return DisplayState.HEALTHY


def display_state(record: Record, now: int) -> DisplayState:
    """First match wins: retired, flapping, silenced (notifications suppressed until a time
    still ahead), recovering (an attempt in flight), failing, healthy."""
    state = base_state(record)
    if state is DisplayState.RETIRED or state is DisplayState.FLAPPING:
        return state
    if record.silenced_until is not None and record.silenced_until > now:
        return DisplayState.SILENCED
    return state


def record_to_wire(record: Record) -> list[Any]:
    """A record's fields in order, as JSON values (`notified` sorted)."""
    values: list[Any] = list(record)
    values[_NOTIFIED] = sorted(record.notified)
    return values


def record_from_wire(
    values: Iterable[Any],
    strings: dict[str, str] | None = None,
    names: tuple[str, ...] = Record._fields,
    ids: Mapping[str, str] | None = None,
) -> Record:
    """`strings`: one object per distinct text of the fields many connectors share (tenant,
    failure, outage group, actor), so a restored fleet holds each once. `names`: the fields
    the values are of (a snapshot's, written by the version that wrote it): a field added
    since takes its default, one removed since is dropped. `ids`: connector ids the process
    holds already, the record's id taken from it when it is there (one object per id)."""
    if names == Record._fields:
        fields = list(values)
        if len(fields) != len(names):
            raise ValueError(f"a record of {len(fields)} values, not {len(names)}")
    else:
        by_name = dict(zip(names, values, strict=True))
        fields = [by_name.get(name, default) for name, default in _RECORD_DEFAULTS]
        if isinstance(fields[_PHASE], Phase):
            fields[_PHASE] = fields[_PHASE].value
    fields[_PHASE] = _PHASES[fields[_PHASE]]
    notified = fields[_NOTIFIED]
    fields[_NOTIFIED] = frozenset(notified) if notified else _NONE_NOTIFIED
    if fields[_MODE] is not None:
        fields[_MODE] = RecoveryMode(fields[_MODE])
    if fields[_DETECTED] is not None and fields[_DETECTED] == fields[_LAST_OCCURRED]:
        fields[_DETECTED] = fields[_LAST_OCCURRED]  # one int object, not two
    if strings is not None:
        for index in _SHARED_AT:
            text = fields[index]
            if text is not None:
                fields[index] = strings.setdefault(text, text)
    if ids:
        connector_id = fields[_CONNECTOR_ID]
        fields[_CONNECTOR_ID] = ids.get(connector_id, connector_id)
    return Record._make(fields)


_SHARED_AT = tuple(
    Record._fields.index(name) for name in ("tenant_id", "failure", "outage_group", "attempt_actor")
)
_NONE_NOTIFIED: frozenset[str] = frozenset()
_PHASE, _MODE = Record._fields.index("phase"), Record._fields.index("attempt_mode")
_DETECTED, _LAST_OCCURRED = (
    Record._fields.index("detected_at"),
    Record._fields.index("last_occurred_at"),
)
_PHASES = {phase.value: phase for phase in Phase}
_RECORD_DEFAULTS = tuple((name, Record._field_defaults.get(name)) for name in Record._fields)


_NOTIFIED = Record._fields.index("notified")
_CONNECTOR_ID = Record._fields.index("connector_id")


class FleetView:
    """The live views' state; feed every audit event once, in each partition's log order
    (`apply` skips re-deliveries itself)."""

    def __init__(self, check_chains: bool = True) -> None:
        self.check_chains = check_chains
        self.records: dict[str, Record] = {}
        self.rejected_only: dict[str, Record] = {}  # not in the fleet; their chain heads
        self.episodes: dict[str, OpenEpisode] = {}
        self.tenants: dict[str, TenantFigures] = {}
        # per tenant key, in `closing_order`, the latest last: the same whatever order the
        # partitions' events were folded in (two workers, a fold and a snapshot's restore)
        self.closed: dict[str, list[OpenEpisode]] = {}
        self.chain_problems: dict[str, str] = {}
        self.outage_chains: dict[str, Record] = {}  # outages' chain heads, not connectors
        self.outages: dict[str, Outage] = {}  # open ones
        self.outages_opened: dict[str, int] = {}  # per tenant key
        # per tenant key: outages resolved, and the sum of their times to resolve (ms)
        self.outages_resolved: dict[str, tuple[int, int]] = {}
        self.since: dict[str, int] = {}  # connectors not healthy: since when, in their state
        self.events = 0
        self.duplicates = 0
        # Derived from the records (never in a snapshot): per tenant key, connectors per
        # base state, and those in phase FAILED; connectors with a silence on record.
        self._states: dict[str, dict[str, int]] = {}
        self._failed: dict[str, int] = {}
        self._silenced: dict[str, int] = {}
        self._tenant_ids: dict[str, str] = {}  # one object per tenant's id (`_held`)
        self._sorted_ids: list[str] = []  # `connector_ids`
        # the fields of a snapshot's records and episodes being restored (`restore`, `add`)
        self._record_names: tuple[str, ...] = Record._fields
        self._episode_names: tuple[str, ...] = OpenEpisode._fields

    # -- folding --------------------------------------------------------------------------
    def apply(self, event: AuditEvent) -> bool:
        """Fold one event; False (and nothing changes) for a re-delivery."""
        connector_id = event.connector_id
        if is_outage_key(connector_id):
            return self._apply_outage(event)
        before = self.records.get(connector_id)
        in_fleet = before is not None
        if before is None:
            before = self.rejected_only.get(connector_id) or Record(connector_id)
        if event.sequence <= before.sequence:
            self.duplicates += 1
            return False
        if self.check_chains and connector_id not in self.chain_problems:
            problem = _link_problem(before, event)
            if problem is not None:
                self.chain_problems[connector_id] = problem
        after = self._held(evolve(before, event))
        self.events += 1
        if not in_fleet and event.type is EventType.COMMAND_REJECTED:
            self.rejected_only[connector_id] = after
            return True
        if not in_fleet:
            self.rejected_only.pop(connector_id, None)
        self.records[connector_id] = after
        self._recount(before if in_fleet else None, after)
        state_before = base_state(before) if in_fleet else None
        state_after = base_state(after)
        if state_after is DisplayState.HEALTHY:
            self.since.pop(connector_id, None)
        elif state_after != state_before or connector_id not in self.since:
            self.since[connector_id] = event.occurred_at
        self._episode(event, after)
        if event.incident_id is not None:
            self._settle(event.incident_id)
        if before.incident_id is not None and before.incident_id != after.incident_id:
            self._settle(before.incident_id)
        return True

    def _held(self, record: Record) -> Record:
        """The record as the view holds it: without `notified` (the decider's memory of the
        notification outcomes it has seen, which no view shows: about a third of a failed
        connector's bytes) and with its tenant's id shared by every connector of the
        tenant."""
        tenant = record.tenant_id
        shared = tenant if tenant is None else self._tenant_ids.setdefault(tenant, tenant)
        if record.notified or shared is not tenant:
            return record._replace(notified=_NONE_NOTIFIED, tenant_id=shared)
        return record

    def _apply_outage(self, event: AuditEvent) -> bool:
        """An event of an outage's chain (docs/outages.md): its head, and the open outages."""
        key = event.connector_id
        before = self.outage_chains.get(key) or Record(key)
        if event.sequence <= before.sequence:
            self.duplicates += 1
            return False
        if self.check_chains and key not in self.chain_problems:
            problem = _link_problem(before, event)
            if problem is not None:
                self.chain_problems[key] = problem
        self.outage_chains[key] = evolve(before, event)
        self.events += 1
        if event.type in OUTAGE_TYPES:
            outage = apply_outage_event(self.outages, event)
            if outage is not None and event.type is EventType.OUTAGE_OPENED:
                tenant = tenant_key(outage.tenant_id)
                self.outages_opened[tenant] = self.outages_opened.get(tenant, 0) + 1
            if outage is not None and outage.resolved_at is not None:
                del self.outages[outage.outage_id]
                if outage.mttr_ms is not None:
                    tenant = tenant_key(outage.tenant_id)
                    count, total_ms = self.outages_resolved.get(tenant, (0, 0))
                    self.outages_resolved[tenant] = (count + 1, total_ms + outage.mttr_ms)
        return True

    def open_outages(self, tenant: str | None = None) -> list[Outage]:
        return [
            o for o in self.outages.values() if tenant is None or tenant_key(o.tenant_id) == tenant
        ]

    def _episode(self, event: AuditEvent, record: Record) -> None:
        """`record`: the connector's, after `event` (its strings are the ones held)."""
        kind = event.type
        incident_id = event.incident_id
        if incident_id is None:
            return
        if kind is EventType.FAILURE_DETECTED:
            self.episodes[incident_id] = OpenEpisode(
                incident_id,
                record.connector_id,
                record.tenant_id,
                event.failure,
                event.occurred_at,
            )
            self._tenant(event.tenant_id).detected(event.occurred_at)
            return
        episode = self.episodes.get(incident_id)
        if episode is None:
            return
        at = event.occurred_at
        match kind:
            case EventType.RECOVERY_COMPLETED:
                if episode.recovered:
                    return
                episode = episode._replace(recovered=True)
                figures = self._tenant(episode.tenant_id)
                figures.recovered_after(episode.detected_at, at - episode.detected_at)
            case EventType.INCIDENT_OPENED:
                level = int(event.attributes.get("level", "0"))
                episode = episode._replace(opened_at=at, escalation_level=level)
            case EventType.INCIDENT_ESCALATED:
                level = int(event.attributes.get("level", "0"))
                episode = episode._replace(escalation_level=level)
            case EventType.INCIDENT_ACKNOWLEDGED:
                episode = episode._replace(acknowledged_at=at, acknowledged_by=event.actor)
            case EventType.INCIDENT_RESOLVED:
                episode = episode._replace(resolved_at=at)
            case _:
                return
        self.episodes[incident_id] = episode

    def _settle(self, incident_id: str) -> None:
        """Forget an episode once it can change no figure: its connector has moved on to
        another episode or none (failed anew, resolved, retired: a recovered connector keeps
        its episode's id, and an incident can still open for it) and its incident, if any,
        is resolved."""
        episode = self.episodes.get(incident_id)
        if episode is None or episode.incident_open:
            return
        if self.records[episode.connector_id].incident_id == incident_id:
            return
        del self.episodes[incident_id]
        if episode.opened_at is not None:
            recent = self.closed.setdefault(tenant_key(episode.tenant_id), [])
            bisect.insort(recent, episode, key=closing_order)
            if len(recent) > RECENT_CLOSED:
                del recent[0]

    def _tenant(self, tenant_id: str | None) -> TenantFigures:
        key = tenant_key(tenant_id)
        figures = self.tenants.get(key)
        if figures is None:
            figures = self.tenants[key] = TenantFigures()
        return figures

    def _recount(self, before: Record | None, after: Record) -> None:
        if before is not None:
            self._count(before, -1)
        self._count(after, +1)

    def _count(self, record: Record, delta: int) -> None:
        key = tenant_key(record.tenant_id)
        states = self._states.get(key)
        if states is None:
            states = self._states[key] = dict.fromkeys(STATES, 0)
        states[base_state(record)] += delta
        if record.phase is Phase.FAILED:
            self._failed[key] = self._failed.get(key, 0) + delta
        if record.silenced_until is not None:
            if delta > 0:
                self._silenced[record.connector_id] = record.silenced_until
            else:
                self._silenced.pop(record.connector_id, None)

    # -- reading --------------------------------------------------------------------------
    def connector_ids(self) -> list[str]:
        """Every connector's id, sorted; sorted again only when a connector has joined (the
        fleet only grows: a retired connector keeps its record)."""
        if len(self._sorted_ids) != len(self.records):
            self._sorted_ids = sorted(self.records)
        return self._sorted_ids

    def connectors_in(self, tenant: str | None) -> int:
        """How many connectors a tenant key (or, None, the fleet) has."""
        if tenant is None:
            return len(self.records)
        return sum(self._states.get(tenant, {}).values())

    def tenant_keys(self) -> list[str]:
        return sorted(key for key, states in self._states.items() if any(states.values()))

    def fleet_counts(self, tenant: str | None, now: int) -> dict[str, int]:
        """Connectors per display state, of one tenant key or (None) every tenant."""
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for key, states in self._states.items():
            if tenant is None or key == tenant:
                for state, n in states.items():
                    counts[state] += n
        for connector_id, until in self._silenced.items():
            if until <= now:
                continue
            record = self.records[connector_id]
            if tenant is not None and tenant_key(record.tenant_id) != tenant:
                continue
            state = base_state(record)
            if state is not DisplayState.RETIRED and state is not DisplayState.FLAPPING:
                counts[state] -= 1
                counts[DisplayState.SILENCED] += 1
        return counts

    def failed_now(self) -> dict[str, int]:
        """Connectors in a failure episode, per tenant key (every tenant that has any)."""
        return {key: self._failed.get(key, 0) for key in self._states}

    def not_healthy(self) -> Iterator[Record]:
        """Connectors whose display state may not be healthy (silenced ones included)."""
        for connector_id in self.since.keys() | self._silenced.keys():
            yield self.records[connector_id]

    def open_incidents(self, tenant: str | None = None) -> list[OpenEpisode]:
        return [
            e
            for e in self.episodes.values()
            if e.incident_open and (tenant is None or tenant_key(e.tenant_id) == tenant)
        ]

    def recently_closed(self, tenant: str | None = None) -> list[OpenEpisode]:
        """The last `RECENT_CLOSED` closed incidents of a tenant key (or of all), newest
        opened first."""
        chosen = [
            episode
            for key, recent in self.closed.items()
            if tenant is None or key == tenant
            for episode in recent
        ]
        chosen.sort(key=lambda e: -(e.opened_at or 0))
        return chosen[:RECENT_CLOSED]

    def trends(self, tenant: str | None) -> tuple[int | None, dict[str, list[tuple[int, Figures]]]]:
        """(window width in seconds, per tenant key its windows (start, figures)) over the
        scope's history; windows without a failure have empty figures."""
        chosen = {
            key: figures
            for key, figures in self.tenants.items()
            if (tenant is None or key == tenant) and figures.first_detected is not None
        }
        if not chosen:
            return None, {}
        first = min(f.first_detected for f in chosen.values() if f.first_detected is not None)
        last = max(f.last_detected for f in chosen.values() if f.last_detected is not None)
        width_s = next(
            (w for w in WINDOW_LADDER_S if (last - first) // (w * 1000) < MAX_WINDOWS),
            WINDOW_LADDER_S[-1],
        )
        width_ms = width_s * 1000
        starts = range(first - first % width_ms, last + 1, width_ms)
        empty = Figures()
        out = {}
        for key, figures in sorted(chosen.items()):
            windows = figures.windows[width_s]
            out[key] = [(start, windows.get(start, empty)) for start in starts]
        return width_s, out

    # -- snapshot -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The view's parts whose size does not follow the fleet, as JSON-able data; the
        rest (records, open episodes, since) comes in chunks from `parts`."""
        return {
            "format": FORMAT,
            # what the values of a record and of an episode are, by name: a later version
            # with a field more or less still restores this snapshot
            "record_fields": list(Record._fields),
            "episode_fields": list(OpenEpisode._fields),
            "check_chains": self.check_chains,
            "events": self.events,
            "duplicates": self.duplicates,
            "rejected_only": [record_to_wire(r) for r in self.rejected_only.values()],
            "tenants": {key: f.to_wire() for key, f in self.tenants.items()},
            "closed": {key: [list(e) for e in recent] for key, recent in self.closed.items()},
            "chain_problems": self.chain_problems,
            "outage_chains": [record_to_wire(r) for r in self.outage_chains.values()],
            "outages": [_outage_to_wire(o) for o in self.outages.values()],
            "outages_opened": self.outages_opened,
            "outages_resolved": {k: list(v) for k, v in self.outages_resolved.items()},
        }

    def parts(self) -> Parts:
        """The records, open episodes and since-times as they are now: immutable values
        (tuples), so a later fold does not change what was taken."""
        return Parts(
            list(self.records.values()), list(self.episodes.values()), list(self.since.items())
        )

    @staticmethod
    def restore(snapshot: dict[str, Any]) -> FleetView:
        """The view of `snapshot`, its parts to be added (`add`)."""
        if snapshot.get("format") != FORMAT:
            raise ValueError(f"a snapshot of format {snapshot.get('format')!r}, not {FORMAT}")
        view = FleetView(check_chains=bool(snapshot["check_chains"]))
        records = view._record_names = tuple(snapshot.get("record_fields", Record._fields))
        episodes = view._episode_names = tuple(snapshot.get("episode_fields", OpenEpisode._fields))
        view.events = int(snapshot["events"])
        view.duplicates = int(snapshot["duplicates"])
        view.rejected_only = {
            r.connector_id: r
            for r in (record_from_wire(w, None, records) for w in snapshot["rejected_only"])
        }
        view.tenants = {key: TenantFigures.from_wire(f) for key, f in snapshot["tenants"].items()}
        view.closed = {
            key: sorted((episode_from_wire(e, episodes) for e in recent), key=closing_order)
            for key, recent in snapshot["closed"].items()
        }
        view.chain_problems = dict(snapshot["chain_problems"])
        view.outage_chains = {
            r.connector_id: r
            for r in (record_from_wire(w, None, records) for w in snapshot["outage_chains"])
        }
        view.outages = {o.outage_id: o for o in (Outage(*w) for w in snapshot["outages"])}
        view.outages_opened = dict(snapshot["outages_opened"])
        view.outages_resolved = {
            key: (int(count), int(total))
            for key, (count, total) in snapshot.get("outages_resolved", {}).items()
        }
        return view

    def add(
        self,
        kind: str,
        wire: list[Any],
        strings: dict[str, str] | None = None,
        ids: Mapping[str, str] | None = None,
    ) -> None:
        """One chunk of a part (`Parts.wire_chunks`) of a snapshot being restored. The
        episodes and since-times share the records' strings (the ids, and `strings`' texts,
        one table for the whole restore): a connector's id is held once, not four times.
        `ids`: connector ids the process holds already (`record_from_wire`)."""
        if strings is None:
            strings = {}
        if kind == "records":
            for values in wire:
                record = self._held(record_from_wire(values, strings, self._record_names, ids))
                self.records[record.connector_id] = record
                self._count(record, +1)
        elif kind == "episodes":
            tenants = self._tenant_ids
            for values in wire:
                episode = episode_from_wire(values, self._episode_names)
                incident_id, connector_id = episode.incident_id, episode.connector_id
                tenant, failure = episode.tenant_id, episode.failure
                detected_at = episode.detected_at
                owner = self.records.get(connector_id)
                if owner is not None:
                    connector_id = owner.connector_id
                    if owner.incident_id == incident_id:
                        incident_id = owner.incident_id
                    detected_at = _same(detected_at, owner)
                self.episodes[incident_id] = OpenEpisode._make(
                    (
                        incident_id,
                        connector_id,
                        None if tenant is None else tenants.setdefault(tenant, tenant),
                        None if failure is None else strings.setdefault(failure, failure),
                        detected_at,
                        *episode[5:],
                    )
                )
        elif kind == "since":
            for connector_id, at in wire:
                owner = self.records.get(connector_id)
                if owner is None:
                    self.since[connector_id] = int(at)
                else:
                    self.since[owner.connector_id] = _same(int(at), owner)
        else:
            raise ValueError(f"a snapshot part {kind!r}")

    def as_data(self) -> dict[str, Any]:
        """Everything the view holds, as comparable data (tests): maps as sorted lists,
        whatever order their keys were met in."""
        parts = self.parts()
        held = self.snapshot()
        return {
            **held,
            "rejected_only": sorted(held["rejected_only"]),
            "outage_chains": sorted(held["outage_chains"]),
            "outages": sorted(held["outages"]),
            "records": sorted(record_to_wire(r) for r in parts.records),
            "episodes": sorted(list(e) for e in parts.episodes),
            "since": sorted(parts.since),
        }


def _same(at: int, record: Record) -> int:
    """`at` as the record's own int object when equal to one of its times: a restored
    fleet of failed connectors then holds each time once, not three times (32 B each)."""
    if at == record.detected_at:
        return record.detected_at
    if at == record.last_occurred_at:
        return record.last_occurred_at
    return at


class Parts(NamedTuple):
    records: list[Record]
    episodes: list[OpenEpisode]
    since: list[tuple[str, int]]

    def wire_chunks(self, size: int) -> Iterator[tuple[str, list[Any]]]:
        """(part, JSON-able values) in chunks of `size`: what `FleetView.add` takes."""
        for start in range(0, len(self.records), size):
            yield "records", [record_to_wire(r) for r in self.records[start : start + size]]
        for start in range(0, len(self.episodes), size):
            yield "episodes", [list(e) for e in self.episodes[start : start + size]]
        for start in range(0, len(self.since), size):
            yield "since", [list(item) for item in self.since[start : start + size]]


def episode_from_wire(values: list[Any], names: tuple[str, ...]) -> OpenEpisode:
    """An open episode from a snapshot's values of `names` (see `record_from_wire`)."""
    if names == OpenEpisode._fields:
        return OpenEpisode(*values)
    fields = dict(zip(names, values, strict=True))
    return OpenEpisode(**{name: fields[name] for name in OpenEpisode._fields if name in fields})


def _outage_to_wire(outage: Outage) -> list[Any]:
    return [
        outage.outage_id,
        outage.group,
        outage.tenant_id,
        outage.opened_at,
        list(outage.connectors),
        list(outage.incidents),
        outage.resolved_at,
        outage.recovered,
        outage.left,
    ]


def _link_problem(head: Record, event: AuditEvent) -> str | None:
    """What is wrong with `event` as the next link after `head`, if anything."""
    if event.sequence != head.sequence + 1:
        return f"sequence {event.sequence} follows {head.sequence}: events are missing"
    if event.prev_hash != (head.head_hash if head.sequence else GENESIS_HASH):
        return f"sequence {event.sequence} does not link to its predecessor"
    if event_hash(event) != event.hash:
        return f"sequence {event.sequence} does not match its hash"
    return None
