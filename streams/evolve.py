"""`evolve(record, event) -> record`: the one mutator of the state of record.

Every event type has exactly one case; an unknown type is a `TypeError`, never ignored.
Replay, verification and the live decider all fold this function. Each case returns the
changes it makes; the chain fields every event moves are added once, in one `_replace`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

from streams.models import AuditEvent, EventType, RecoveryMode
from streams.state import Phase, Record
from streams.timefmt import ms_from_iso

# The fields of a failure episode and its incident, as they are when there is none.
_NO_EPISODE: dict[str, Any] = {
    name: Record._field_defaults[name]
    for name in Record._fields
    if name
    not in (
        "connector_id",
        "tenant_id",
        "sequence",
        "head_hash",
        "last_occurred_at",
        "phase",
        "silenced_until",
        "flapping",
    )
}
_NO_ATTEMPTS: dict[str, Any] = {
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
}


def _ms(event: AuditEvent, key: str) -> int | None:
    text = event.attributes.get(key)
    return None if text is None else ms_from_iso(text)


def _int(event: AuditEvent, key: str) -> int | None:
    text = event.attributes.get(key)
    return None if text is None else int(text)


def _changes(record: Record, event: AuditEvent) -> dict[str, Any]:
    kind = event.type
    match kind:
        case EventType.FAILURE_DETECTED:
            return {
                **_NO_EPISODE,
                "phase": Phase.FAILED,
                "incident_id": event.incident_id,
                "failure": event.failure,
                "retryable": event.attributes.get("retryable", "true") == "true",
                "detected_at": event.occurred_at,
                "position_at_failure": event.attributes.get("position"),
                "next_attempt_at": _ms(event, "next_attempt_at"),
            }
        case EventType.FLAPPING_STARTED:
            return {
                "flapping": True,
                "next_attempt_at": None,
                "attempt_in_flight": None,
                "attempt_deadline": None,
            }
        case EventType.FLAPPING_STOPPED:
            return {"flapping": False, "next_attempt_at": _ms(event, "next_attempt_at")}
        case EventType.RECOVERY_STARTED:
            auto = event.mode is RecoveryMode.AUTO
            return {
                "attempts": event.attempt or record.attempts + 1,
                "auto_attempts": record.auto_attempts + (1 if auto else 0),
                "attempt_in_flight": event.attempt,
                "attempt_mode": event.mode,
                "attempt_actor": event.actor,
                "attempt_deadline": _ms(event, "deadline"),
                "next_attempt_at": None,
            }
        case EventType.RECOVERY_ACTION_ACCEPTED:
            return {}
        case EventType.RECOVERY_FAILED:
            return {
                "attempt_in_flight": None,
                "attempt_deadline": None,
                "next_attempt_at": _ms(event, "next_attempt_at"),
            }
        case EventType.RECOVERY_COMPLETED:
            # The incident (if any) stays open until the incident.resolved that follows.
            return {**_NO_ATTEMPTS, "phase": Phase.OK, "flapping": False}
        case EventType.RETRIES_EXHAUSTED:
            return {"next_attempt_at": None}
        case EventType.SILENCED:
            return {"silenced_until": _ms(event, "until")}
        case EventType.RETIRED:
            return {**_NO_EPISODE, "phase": Phase.RETIRED, "flapping": False}
        case EventType.INCIDENT_OPENED:
            return {
                "incident_open": True,
                "incident_opened_at": event.occurred_at,
                "acknowledged": False,
                "escalation_level": _int(event, "level") or 0,
                "next_escalation_level": _int(event, "next_escalation_level"),
                "next_escalation_at": _ms(event, "next_escalation_at"),
            }
        case EventType.INCIDENT_ACKNOWLEDGED:
            return {"acknowledged": True, "next_escalation_level": None, "next_escalation_at": None}
        case EventType.INCIDENT_ESCALATED:
            return {
                "escalation_level": max(record.escalation_level, _int(event, "level") or 0),
                "tenant_escalated": record.tenant_escalated
                or event.attributes.get("reason") == "tenant_notification_failed",
                "next_escalation_level": _int(event, "next_escalation_level"),
                "next_escalation_at": _ms(event, "next_escalation_at"),
            }
        case EventType.INCIDENT_RESOLVED:
            # Ends the episode: after a recovery, or by a human without one.
            phase = Phase.RETIRED if record.phase is Phase.RETIRED else Phase.OK
            return {**_NO_EPISODE, "phase": phase, "flapping": False}
        case EventType.NOTIFICATION_SENT | EventType.NOTIFICATION_FAILED:
            if event.incident_id != record.incident_id:
                return {}
            return {"notified": record.notified | {event.attributes.get("dedup_key", "")}}
        case EventType.NOTIFICATION_SUPPRESSED | EventType.COMMAND_REJECTED:
            return {}
        case _:
            assert_never(kind)


def evolve(record: Record, event: AuditEvent) -> Record:
    changes = _changes(record, event)
    return record._replace(
        sequence=event.sequence,
        head_hash=event.hash,
        last_occurred_at=event.occurred_at,
        tenant_id=event.tenant_id,
        **changes,
    )


def fold(record: Record, events: Iterable[AuditEvent]) -> Record:
    for event in events:
        record = evolve(record, event)
    return record
