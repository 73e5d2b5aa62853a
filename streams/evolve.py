"""`evolve(record, event) -> record`: the one mutator of the state of record.

Every event type has exactly one case; an unknown type is a `TypeError`, never ignored.
Attributes are read through the typed views of `streams.evidence`.
Replay, verification and the live decider all fold this function. Each case returns the
changes it makes; the chain fields every event moves are added once, in one `_replace`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict, assert_never, cast

from streams.evidence import (
    FailureDetected,
    FlappingStopped,
    IncidentEscalated,
    IncidentOpened,
    NotificationOutcome,
    OutageLinked,
    OutageReleased,
    RecoveryFailed,
    RecoveryStarted,
    Silenced,
    read,
)
from streams.models import AuditEvent, EscalationReason, EventType, RecoveryMode
from streams.state import Phase, Record


class Changes(TypedDict, total=False):
    """The fields of `Record` one event sets, beyond the chain fields every event moves
    (`_chain_moved`): each key is a field's name, each value of that field's type, so a
    misspelt field or a mistyped value is a mypy error. (A plain dict at run time: replay
    builds one per event.) tests/core/test_typed_contracts.py checks the keys are the
    record's."""

    phase: Phase
    flapping: bool
    silenced_until: int | None
    incident_id: str | None
    failure: str | None
    retryable: bool
    detected_at: int | None
    position_at_failure: str | None
    attempts: int
    auto_attempts: int
    attempt_in_flight: int | None
    attempt_mode: RecoveryMode | None
    attempt_actor: str | None
    attempt_deadline: int | None
    next_attempt_at: int | None
    incident_open: bool
    incident_opened_at: int | None
    acknowledged: bool
    escalation_level: int
    tenant_escalated: bool
    next_escalation_level: int | None
    next_escalation_at: int | None
    notified: frozenset[str]
    outage_group: str | None
    outage_id: str | None
    notify_at: int | None
    restarts_held: bool


CHAIN_FIELDS = ("connector_id", "tenant_id", "sequence", "head_hash", "last_occurred_at")
"""The fields every event moves (or, for the id, never moves): not in `Changes`."""

# The fields of a failure episode and its incident, as they are when there is none. A cast:
# mypy cannot follow the comprehension, and the test above checks the keys are `Changes`'.
_NO_EPISODE = cast(
    Changes,
    {
        name: Record._field_defaults[name]
        for name in Record._fields
        if name not in (*CHAIN_FIELDS, "phase", "silenced_until", "flapping")
    },
)
_NO_ATTEMPTS: Changes = {
    "failure": None,
    "retryable": True,
    "detected_at": None,
    "position_at_failure": None,
    "attempts": 0,
    "auto_attempts": 0,
    "attempt_in_flight": None,
    "attempt_mode": None,
    "attempt_actor": None,
    "attempt_deadline": None,
    "next_attempt_at": None,
    "notify_at": None,  # recovered within the group wait: its failure goes unpaged
    "restarts_held": False,
}


def _changes(record: Record, event: AuditEvent) -> Changes:
    kind = event.type
    match kind:
        # the most frequent type first: a match tries its cases in order
        case EventType.NOTIFICATION_SENT | EventType.NOTIFICATION_FAILED:
            if event.incident_id != record.incident_id:
                return {}
            outcome = read(NotificationOutcome, event.attributes)
            return {"notified": record.notified.union((outcome.dedup_key,))}
        case EventType.FAILURE_DETECTED:
            detected = read(FailureDetected, event.attributes)
            return {
                **_NO_EPISODE,
                "phase": Phase.FAILED,
                "incident_id": event.incident_id,
                "failure": event.failure,
                "retryable": detected.retryable,
                "detected_at": event.occurred_at,
                "position_at_failure": detected.position,
                "next_attempt_at": detected.next_attempt_at,
                "outage_group": detected.group,
                "notify_at": detected.notify_at,
            }
        case EventType.FLAPPING_STARTED:
            return {
                "flapping": True,
                "next_attempt_at": None,
                "attempt_in_flight": None,
                "attempt_deadline": None,
            }
        case EventType.FLAPPING_STOPPED:
            stopped = read(FlappingStopped, event.attributes)
            return {"flapping": False, "next_attempt_at": stopped.next_attempt_at}
        case EventType.RECOVERY_STARTED:
            auto = event.mode is RecoveryMode.AUTO
            return {
                "attempts": event.attempt or record.attempts + 1,
                "auto_attempts": record.auto_attempts + (1 if auto else 0),
                "attempt_in_flight": event.attempt,
                "attempt_mode": event.mode,
                "attempt_actor": event.actor,
                "attempt_deadline": read(RecoveryStarted, event.attributes).deadline,
                "next_attempt_at": None,
            }
        case EventType.RECOVERY_ACTION_ACCEPTED:
            return {}
        case EventType.RECOVERY_FAILED:
            return {
                "attempt_in_flight": None,
                "attempt_deadline": None,
                "next_attempt_at": read(RecoveryFailed, event.attributes).next_attempt_at,
            }
        case EventType.RECOVERY_COMPLETED:
            # The incident (if any) stays open until the incident.resolved that follows.
            return {**_NO_ATTEMPTS, "phase": Phase.OK, "flapping": False}
        case EventType.RETRIES_EXHAUSTED:
            return {"next_attempt_at": None}
        case EventType.SILENCED:
            return {"silenced_until": read(Silenced, event.attributes).until}
        case EventType.RETIRED:
            return {**_NO_EPISODE, "phase": Phase.RETIRED, "flapping": False}
        case EventType.INCIDENT_OPENED:
            opened = read(IncidentOpened, event.attributes)
            return {
                "incident_open": True,
                "incident_opened_at": event.occurred_at,
                "acknowledged": False,
                "escalation_level": opened.level,
                "next_escalation_level": opened.next_escalation_level,
                "next_escalation_at": opened.next_escalation_at,
            }
        case EventType.INCIDENT_ACKNOWLEDGED:
            return {"acknowledged": True, "next_escalation_level": None, "next_escalation_at": None}
        case EventType.INCIDENT_ESCALATED:
            escalated = read(IncidentEscalated, event.attributes)
            return {
                "escalation_level": max(record.escalation_level, escalated.level),
                "tenant_escalated": record.tenant_escalated
                or escalated.reason is EscalationReason.TENANT_NOTIFICATION_FAILED,
                "next_escalation_level": escalated.next_escalation_level,
                "next_escalation_at": escalated.next_escalation_at,
            }
        case EventType.INCIDENT_RESOLVED:
            # Ends the episode: after a recovery, or by a human without one.
            phase = Phase.RETIRED if record.phase is Phase.RETIRED else Phase.OK
            return {**_NO_EPISODE, "phase": phase, "flapping": False}
        case EventType.OUTAGE_LINKED:
            # the outage pages instead: a page held for it is not sent
            linked = read(OutageLinked, event.attributes)
            if linked.held:
                return {
                    "outage_id": linked.outage_id,
                    "notify_at": None,
                    "restarts_held": True,
                    "next_attempt_at": None,
                }
            return {"outage_id": linked.outage_id, "notify_at": None}
        case EventType.OUTAGE_RELEASED:
            released = read(OutageReleased, event.attributes)
            return {"restarts_held": False, "next_attempt_at": released.next_attempt_at}
        case EventType.NOTIFICATION_RELEASED:
            return {"notify_at": None}
        case (
            EventType.NOTIFICATION_SUPPRESSED
            | EventType.COMMAND_REJECTED
            | EventType.OUTAGE_OPENED
            | EventType.OUTAGE_JOINED
            | EventType.OUTAGE_RESOLVED
            | EventType.OUTAGE_ACKNOWLEDGED
            | EventType.OUTAGE_RECOVERY_REQUESTED
        ):
            # An outage's own chain (streams/outages.py folds its record): here only the
            # chain moves, so `verify` checks outage chains as it checks connectors'.
            return {}
        case _:
            assert_never(kind)


_AT = {name: index for index, name in enumerate(Record._fields)}
_TENANT, _SEQUENCE, _HEAD, _LAST_AT = (
    _AT[name] for name in ("tenant_id", "sequence", "head_hash", "last_occurred_at")
)


def _chain_moved(record: Record, event: AuditEvent) -> list[Any]:
    """The record's fields as a list, with those every event moves (whatever its type)
    already moved."""
    values = list(record)
    values[_TENANT] = event.tenant_id
    values[_SEQUENCE] = event.sequence
    values[_HEAD] = event.hash
    values[_LAST_AT] = event.occurred_at
    return values


def evolve(record: Record, event: AuditEvent) -> Record:
    """The record after `event`; EvidenceError when its attributes do not read as its
    type's view (never for an event the decider wrote)."""
    changes = _changes(record, event)
    values = _chain_moved(record, event)
    # `_replace` with a list instead of keywords: replay folds this once per event
    for name, value in changes.items():
        values[_AT[name]] = value
    return Record._make(values)


def advance_chain(record: Record, event: AuditEvent) -> Record:
    """The record with only the chain fields of `event` applied: how the verify fold steps
    over an event whose evidence it cannot read, so the chain checks go on."""
    return Record._make(_chain_moved(record, event))


def fold(record: Record, events: Iterable[AuditEvent]) -> Record:
    for event in events:
        record = evolve(record, event)
    return record
