"""Projections: folds over audit events only. The live `/metrics` agent, `replay` and
`report` all use these, so there is one implementation of MTTR.

Definitions (per failure episode, keyed by `incident_id`):
* MTTR = `recovery.completed.occurred_at - failure.detected.occurred_at`
* MTTD = `failure.detected.occurred_at - attributes.first_failing_at`
* MTTA = `incident.acknowledged.occurred_at - incident.opened.occurred_at`

Percentiles use the **nearest-rank** method: p-th percentile of n sorted values is the
value at rank ceil(p/100 * n) (1-based). Tenant key for platform-scoped connectors:
`_platform`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

from streams.evidence import (
    EvidenceError,
    FailureDetected,
    OutageJoined,
    OutageOpened,
    OutageResolved,
    RecoveryCompleted,
    read,
    write,
)
from streams.evolve import evolve
from streams.models import AuditEvent, EventType
from streams.state import Record
from streams.timefmt import iso_from_ms

PLATFORM_TENANT = "_platform"


def tenant_key(tenant_id: str | None) -> str:
    return tenant_id if tenant_id is not None else PLATFORM_TENANT


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
        }


def nearest_rank(sorted_values: list[float], percentile: float) -> float:
    rank = max(1, math.ceil(percentile / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float]) -> Summary:
    ordered = sorted(values)
    if not ordered:
        return Summary(0, None, None, None, None)
    return Summary(
        count=len(ordered),
        mean=sum(ordered) / len(ordered),
        p50=nearest_rank(ordered, 50),
        p90=nearest_rank(ordered, 90),
        p99=nearest_rank(ordered, 99),
    )


@dataclass(slots=True)
class Episode:
    """One failure episode and, if it needed a human, its incident."""

    incident_id: str
    connector_id: str
    tenant_id: str | None
    failure: str | None
    detected_at: int
    first_failing_at: int
    recovered_at: int | None = None
    opened_at: int | None = None
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    resolved_at: int | None = None
    mode: str | None = None
    retries: int | None = None
    receipt: RecoveryCompleted | None = None  # None too when incomplete (a verify finding)
    timeline: list[tuple[int, str, int]] | None = None  # kept with the projection's detail
    outage_id: str | None = None  # the outage it was part of (docs/outages.md)

    @property
    def receipt_attributes(self) -> dict[str, str] | None:
        """The receipt as it is on the wire (and in reports)."""
        return None if self.receipt is None else write(self.receipt)

    @property
    def mttr_ms(self) -> int | None:
        return None if self.recovered_at is None else self.recovered_at - self.detected_at

    @property
    def mttd_ms(self) -> int:
        return self.detected_at - self.first_failing_at

    @property
    def mtta_ms(self) -> int | None:
        if self.opened_at is None or self.acknowledged_at is None:
            return None
        return self.acknowledged_at - self.opened_at

    @property
    def incident_open(self) -> bool:
        return self.opened_at is not None and self.resolved_at is None


@dataclass(slots=True)
class Outage:
    """One outage (docs/outages.md): MTTR = resolved - opened."""

    outage_id: str
    group: str
    tenant_id: str | None  # None: a dependency's outage, the platform's
    opened_at: int
    connectors: list[str]  # in the order they joined; a connector failing twice is twice
    incidents: list[str]
    resolved_at: int | None = None
    recovered: int | None = None
    left: int | None = None

    @property
    def mttr_ms(self) -> int | None:
        return None if self.resolved_at is None else self.resolved_at - self.opened_at


OUTAGE_TYPES = frozenset(
    {
        EventType.OUTAGE_OPENED,
        EventType.OUTAGE_JOINED,
        EventType.OUTAGE_RESOLVED,
        EventType.OUTAGE_ACKNOWLEDGED,
        EventType.OUTAGE_RECOVERY_REQUESTED,
    }
)


def apply_outage_event(outages: dict[str, Outage], event: AuditEvent) -> Outage | None:
    """Fold an event of an outage's chain into `outages` (by outage id); the outage it
    touched, None when its evidence does not read (a verify finding)."""
    outage_id = event.incident_id or event.event_id
    try:
        if event.type is EventType.OUTAGE_OPENED:
            opened = read(OutageOpened, event.attributes)
            opening = outages[outage_id] = Outage(
                outage_id,
                opened.group,
                event.tenant_id,
                event.occurred_at,
                list(opened.connectors),
                list(opened.incidents),
            )
            return opening
        outage = outages.get(outage_id)
        if outage is None:
            return None
        kind = event.type
        match kind:
            case EventType.OUTAGE_JOINED:
                joined = read(OutageJoined, event.attributes)
                outage.connectors.append(joined.connector)
                outage.incidents.append(joined.member_incident)
            case EventType.OUTAGE_RESOLVED:
                resolved = read(OutageResolved, event.attributes)
                outage.resolved_at = event.occurred_at
                outage.recovered, outage.left = resolved.recovered, resolved.left
            case (
                EventType.OUTAGE_OPENED  # handled above
                | EventType.COMMAND_REJECTED  # an outage's chain: the outage does not change
                | EventType.OUTAGE_ACKNOWLEDGED
                | EventType.OUTAGE_RECOVERY_REQUESTED
                | EventType.FAILURE_DETECTED
                | EventType.FLAPPING_STARTED
                | EventType.FLAPPING_STOPPED
                | EventType.RECOVERY_STARTED
                | EventType.RECOVERY_ACTION_ACCEPTED
                | EventType.RECOVERY_FAILED
                | EventType.RECOVERY_COMPLETED
                | EventType.RETRIES_EXHAUSTED
                | EventType.SILENCED
                | EventType.RETIRED
                | EventType.INCIDENT_OPENED
                | EventType.INCIDENT_ACKNOWLEDGED
                | EventType.INCIDENT_ESCALATED
                | EventType.INCIDENT_RESOLVED
                | EventType.NOTIFICATION_SENT
                | EventType.NOTIFICATION_FAILED
                | EventType.NOTIFICATION_SUPPRESSED
                | EventType.OUTAGE_LINKED
                | EventType.NOTIFICATION_RELEASED
                | EventType.OUTAGE_RELEASED
            ):
                return None
            case _:
                assert_never(kind)
    except EvidenceError:
        return None
    return outage


class Projection:
    """Accumulates episodes, outages and per-connector records from audit events, in log
    order.

    Feed each event once (`apply`); duplicates must be filtered by the caller (the verify
    fold says which ones are benign re-sends).
    """

    __slots__ = ("detail", "episodes", "outages", "records")

    def __init__(self, detail: bool = True) -> None:
        # without detail (replay, verify): no timelines or receipts, which grow per event
        self.detail = detail
        self.episodes: dict[str, Episode] = {}
        self.records: dict[str, Record] = {}
        self.outages: dict[str, Outage] = {}

    def apply(self, event: AuditEvent, folded: Record | None = None) -> None:
        """Apply one event; `folded` is the record after it when the caller already folded
        it (the verify fold does, and keeps the records), so it is not folded twice."""
        if event.type in OUTAGE_TYPES:
            # The outage's chain gets a record too (only its chain fields move): views that
            # look up the record of every event's chain keep working. `is_outage_key` tells
            # them apart from connectors; `outages` holds what they mean.
            record = self.records.get(event.connector_id) or Record(event.connector_id)
            self.records[event.connector_id] = evolve(record, event)
            outage = apply_outage_event(self.outages, event)
            if outage is None or event.type is EventType.OUTAGE_RESOLVED:
                return
            linked = (
                outage.incidents
                if event.type is EventType.OUTAGE_OPENED
                else [outage.incidents[-1]]
            )
            for member_incident in linked:
                episode = self.episodes.get(member_incident)
                if episode is not None:
                    episode.outage_id = outage.outage_id
            return
        if folded is None:
            record = self.records.get(event.connector_id) or Record(event.connector_id)
            self.records[event.connector_id] = evolve(record, event)
        incident_id = event.incident_id
        kind = event.type
        if kind is EventType.FAILURE_DETECTED and incident_id is not None:
            self.episodes[incident_id] = Episode(
                incident_id=incident_id,
                connector_id=event.connector_id,
                tenant_id=event.tenant_id,
                failure=event.failure,
                detected_at=event.occurred_at,
                first_failing_at=read(FailureDetected, event.attributes).first_failing_at,
                timeline=[] if self.detail else None,
            )
        episode = self.episodes.get(incident_id or "")
        if episode is None:
            return
        if episode.timeline is not None:
            episode.timeline.append((event.occurred_at, kind.value, event.sequence))
        instant = _INSTANT_SET_BY.get(kind)
        if instant is None:
            return
        setattr(episode, instant, event.occurred_at)
        if kind is EventType.RECOVERY_COMPLETED:
            episode.mode = event.mode.value if event.mode else None
            try:
                receipt: RecoveryCompleted | None = read(RecoveryCompleted, event.attributes)
            except EvidenceError:
                receipt = None  # the verify fold reports it as receipt_incomplete
            episode.retries = None if receipt is None else receipt.retries
            if self.detail:
                episode.receipt = receipt
        elif kind is EventType.INCIDENT_ACKNOWLEDGED:
            episode.acknowledged_by = event.actor

    def tenant_of(self, incident_id: str) -> str | None:
        episode = self.episodes.get(incident_id)
        return None if episode is None else episode.tenant_id

    def apply_all(self, events: Iterable[AuditEvent]) -> Projection:
        for event in events:
            self.apply(event)
        return self


# The instant of its episode an event sets to its own time (detection aside).
_INSTANT_SET_BY = {
    EventType.RECOVERY_COMPLETED: "recovered_at",
    EventType.INCIDENT_OPENED: "opened_at",
    EventType.INCIDENT_ACKNOWLEDGED: "acknowledged_at",
    EventType.INCIDENT_RESOLVED: "resolved_at",
}
# `Figures` keeps six instants per episode, in this order.
_INSTANTS = ("detected_at", "first_failing_at", *_INSTANT_SET_BY.values())
_INSTANT_AT = {name: index for index, name in enumerate(_INSTANTS)}
_UNSET = -(2**63)  # an instant not (yet) recorded: None on an Episode
_DETECTED, _FIRST_FAILING, _RECOVERED, _OPENED, _ACKNOWLEDGED, _RESOLVED = range(6)


class Figures:
    """The episodes of a `Projection` without detail as figures only: six instants per
    episode in one array of machine integers, instead of an `Episode` with its boxed
    instants (about 400 bytes each): a replay of millions of events holds every episode to
    the end of the log. Fed like a `Projection`, with records the caller folds; gives the
    totals and per-tenant totals `replay` shows, and the open incidents."""

    __slots__ = ("_instants", "_slot", "_tenants", "outages", "records")

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}  # incident id -> its episode's place
        self._tenants: list[str | None] = []
        self._instants = array("q")
        self.records: dict[str, Record] = {}  # set by the caller's fold
        self.outages: dict[str, Outage] = {}  # a few per dependency: kept whole

    def apply(self, event: AuditEvent, folded: Record) -> None:  # noqa: ARG002 - as Projection
        """Apply one event (not a duplicate), already folded by the caller."""
        kind = event.type
        if kind in OUTAGE_TYPES:
            apply_outage_event(self.outages, event)
            return
        incident_id = event.incident_id
        if kind is EventType.FAILURE_DETECTED and incident_id is not None:
            first_failing_at = read(FailureDetected, event.attributes).first_failing_at
            slot = self._slot.get(incident_id)
            if slot is None:
                slot = self._slot[incident_id] = len(self._tenants)
                self._tenants.append(event.tenant_id)
                self._instants.extend(_NO_INSTANTS)
            else:  # detected again: a new episode under the same id, as in a Projection
                self._tenants[slot] = event.tenant_id
                self._instants[slot * 6 : slot * 6 + 6] = _NO_INSTANTS
            self._instants[slot * 6 + _DETECTED] = event.occurred_at
            self._instants[slot * 6 + _FIRST_FAILING] = first_failing_at
            return
        instant = _INSTANT_SET_BY.get(kind)
        if instant is None:
            return
        slot = self._slot.get(incident_id or "")
        if slot is not None:
            self._instants[slot * 6 + _INSTANT_AT[instant]] = event.occurred_at

    def tenant_of(self, incident_id: str) -> str | None:
        slot = self._slot.get(incident_id)
        return None if slot is None else self._tenants[slot]

    def open_incidents(self) -> list[str]:
        times = self._instants
        return [
            incident_id
            for incident_id, slot in self._slot.items()
            if times[slot * 6 + _OPENED] != _UNSET and times[slot * 6 + _RESOLVED] == _UNSET
        ]

    def totals(self, in_period: Callable[[int], bool]) -> tuple[Totals, dict[str, Totals]]:
        """(totals, totals per tenant key) of the episodes detected `in_period`."""
        groups: dict[str, _Values] = {}
        times = self._instants
        for slot, tenant in enumerate(self._tenants):
            (detected, first_failing, recovered, opened, acknowledged, resolved) = times[
                slot * 6 : slot * 6 + 6
            ]
            if not in_period(detected):
                continue
            values = groups.get(tenant_key(tenant))
            if values is None:
                values = groups[tenant_key(tenant)] = _Values()
            values.count += 1
            values.mttd.append((detected - first_failing) / 1000)
            if recovered != _UNSET:
                values.mttr.append((recovered - detected) / 1000)
            if opened != _UNSET:
                values.open += resolved == _UNSET
                if acknowledged != _UNSET:
                    values.mtta.append((acknowledged - opened) / 1000)
        every = _Values()
        for values in groups.values():
            every.count += values.count
            every.open += values.open
            every.mttr.extend(values.mttr)
            every.mttd.extend(values.mttd)
            every.mtta.extend(values.mtta)
        return every.totals(), {key: groups[key].totals() for key in sorted(groups)}


_NO_INSTANTS = array("q", [_UNSET] * 6)


class _Values:
    """An episode group's figures, collected for `Totals` (seconds, machine doubles)."""

    __slots__ = ("count", "mtta", "mttd", "mttr", "open")

    def __init__(self) -> None:
        self.count = 0
        self.open = 0
        self.mttr = array("d")
        self.mttd = array("d")
        self.mtta = array("d")

    def totals(self) -> Totals:
        return _totals(self.count, self.open, self.mttr, self.mttd, self.mtta)


@dataclass(frozen=True, slots=True)
class Totals:
    failure_count: int
    recovered_count: int
    open_incidents: int
    mttr_seconds: Summary
    mttd_seconds: Summary
    mtta_seconds: Summary

    def as_dict(self) -> dict[str, object]:
        return {
            "failure_count": self.failure_count,
            "recovered_count": self.recovered_count,
            "open_incidents": self.open_incidents,
            "mttr_seconds": self.mttr_seconds.as_dict(),
            "mttd_seconds": self.mttd_seconds.as_dict(),
            "mtta_seconds": self.mtta_seconds.as_dict(),
        }


def totals(episodes: Iterable[Episode]) -> Totals:
    chosen = list(episodes)
    return _totals(
        len(chosen),
        sum(1 for e in chosen if e.incident_open),
        [e.mttr_ms / 1000 for e in chosen if e.mttr_ms is not None],
        [e.mttd_ms / 1000 for e in chosen],
        [e.mtta_ms / 1000 for e in chosen if e.mtta_ms is not None],
    )


def _totals(
    count: int,
    open_incidents: int,
    mttr: Sequence[float],
    mttd: Sequence[float],
    mtta: Sequence[float],
) -> Totals:
    return Totals(
        failure_count=count,
        recovered_count=len(mttr),
        open_incidents=open_incidents,
        mttr_seconds=summarize(mttr),
        mttd_seconds=summarize(mttd),
        mtta_seconds=summarize(mtta),
    )


def group_totals(
    episodes: Iterable[Episode], by: Literal["connector", "tenant"]
) -> dict[str, Totals]:
    """Totals per `connector` or per `tenant`."""
    groups: dict[str, list[Episode]] = {}
    for episode in episodes:
        match by:
            case "connector":
                key = episode.connector_id
            case "tenant":
                key = tenant_key(episode.tenant_id)
            case _:
                assert_never(by)
        groups.setdefault(key, []).append(episode)
    return {key: totals(members) for key, members in sorted(groups.items())}


def windowed_totals(episodes: Iterable[Episode], width_ms: int) -> dict[int, Totals]:
    """Totals per time window of `width_ms`, keyed by the window's start (by detection)."""
    groups: dict[int, list[Episode]] = {}
    for episode in episodes:
        start = episode.detected_at - episode.detected_at % width_ms
        groups.setdefault(start, []).append(episode)
    return {start: totals(members) for start, members in sorted(groups.items())}


def outage_report(
    outages: Iterable[Outage],
    tenant_of: Callable[[str], str | None],
    in_period: Callable[[int], bool],
    *,
    detail: bool,
) -> dict[str, object]:
    """Outages opened `in_period`: how many, how many still open, MTTR (resolved - opened)
    overall and per tenant (an outage counts for every tenant with a connector in it:
    `tenant_of` an incident id); with `detail`, each outage with its connectors."""
    chosen = sorted(
        (o for o in outages if in_period(o.opened_at)), key=lambda o: (o.opened_at, o.outage_id)
    )
    per_tenant: dict[str, list[Outage]] = {}
    for outage in chosen:
        for tenant in sorted({tenant_key(tenant_of(i)) for i in outage.incidents}):
            per_tenant.setdefault(tenant, []).append(outage)

    def figures(group: list[Outage]) -> dict[str, object]:
        mttr = [o.mttr_ms / 1000 for o in group if o.mttr_ms is not None]
        return {
            "count": len(group),
            "open": sum(1 for o in group if o.resolved_at is None),
            "mttr_seconds": summarize(mttr).as_dict(),
        }

    report: dict[str, object] = {
        **figures(chosen),
        "tenants": {tenant: figures(group) for tenant, group in sorted(per_tenant.items())},
    }
    if detail:
        report["outages"] = [
            {
                "outage_id": o.outage_id,
                "group": o.group,
                "tenant_id": None if o.tenant_id is None else tenant_key(o.tenant_id),
                "opened_at": iso_from_ms(o.opened_at),
                "resolved_at": None if o.resolved_at is None else iso_from_ms(o.resolved_at),
                "mttr_seconds": None if o.mttr_ms is None else o.mttr_ms / 1000,
                "connectors": o.connectors,
                "incidents": o.incidents,
                "recovered": o.recovered,
                "left": o.left,
            }
            for o in chosen
        ]
    return report
