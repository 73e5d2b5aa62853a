"""`evolve(record, event) -> record`: the one mutator of the state of record.

Every event type has exactly one case; an unknown type is a `TypeError`, never ignored.
Replay, verification and the live decider all fold this function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import assert_never

from streams.models import AuditEvent, EventType, RecoveryMode
from streams.state import Phase, Record
from streams.timefmt import ms_from_iso


def _ms(event: AuditEvent, key: str) -> int | None:
    text = event.attributes.get(key)
    return None if text is None else ms_from_iso(text)


def _int(event: AuditEvent, key: str) -> int | None:
    text = event.attributes.get(key)
    return None if text is None else int(text)


def _end_episode(record: Record) -> Record:
    """The record with no failure episode and no incident (chain fields kept)."""
    return Record(
        connector_id=record.connector_id,
        tenant_id=record.tenant_id,
        sequence=record.sequence,
        head_hash=record.head_hash,
        last_occurred_at=record.last_occurred_at,
        phase=Phase.OK if record.phase is not Phase.RETIRED else Phase.RETIRED,
        silenced_until=record.silenced_until,
    )


def evolve(record: Record, event: AuditEvent) -> Record:
    linked = replace(
        record,
        sequence=event.sequence,
        head_hash=event.hash,
        last_occurred_at=event.occurred_at,
        tenant_id=event.tenant_id,
    )
    kind = event.type
    match kind:
        case EventType.FAILURE_DETECTED:
            return replace(
                _end_episode(linked),
                phase=Phase.FAILED,
                incident_id=event.incident_id,
                failure=event.failure,
                retryable=event.attributes.get("retryable", "true") == "true",
                detected_at=event.occurred_at,
                position_at_failure=event.attributes.get("position"),
                next_attempt_at=_ms(event, "next_attempt_at"),
            )
        case EventType.FLAPPING_STARTED:
            return replace(
                linked,
                flapping=True,
                next_attempt_at=None,
                attempt_in_flight=None,
                attempt_deadline=None,
            )
        case EventType.FLAPPING_STOPPED:
            return replace(linked, flapping=False, next_attempt_at=_ms(event, "next_attempt_at"))
        case EventType.RECOVERY_STARTED:
            auto = event.mode is RecoveryMode.AUTO
            return replace(
                linked,
                attempts=event.attempt or linked.attempts + 1,
                auto_attempts=linked.auto_attempts + (1 if auto else 0),
                attempt_in_flight=event.attempt,
                attempt_mode=event.mode,
                attempt_actor=event.actor,
                attempt_deadline=_ms(event, "deadline"),
                next_attempt_at=None,
            )
        case EventType.RECOVERY_ACTION_ACCEPTED:
            return linked
        case EventType.RECOVERY_FAILED:
            return replace(
                linked,
                attempt_in_flight=None,
                attempt_deadline=None,
                next_attempt_at=_ms(event, "next_attempt_at"),
            )
        case EventType.RECOVERY_COMPLETED:
            return replace(
                linked,
                phase=Phase.OK,
                flapping=False,
                failure=None,
                retryable=True,
                detected_at=None,
                position_at_failure=None,
                attempts=0,
                auto_attempts=0,
                attempt_in_flight=None,
                attempt_mode=None,
                attempt_actor=None,
                attempt_deadline=None,
                next_attempt_at=None,
            )
        case EventType.RETRIES_EXHAUSTED:
            return replace(linked, next_attempt_at=None)
        case EventType.SILENCED:
            return replace(linked, silenced_until=_ms(event, "until"))
        case EventType.RETIRED:
            return _end_episode(replace(linked, phase=Phase.RETIRED, flapping=False))
        case EventType.INCIDENT_OPENED:
            return replace(
                linked,
                incident_open=True,
                incident_opened_at=event.occurred_at,
                acknowledged=False,
                escalation_level=_int(event, "level") or 0,
                next_escalation_level=_int(event, "next_escalation_level"),
                next_escalation_at=_ms(event, "next_escalation_at"),
            )
        case EventType.INCIDENT_ACKNOWLEDGED:
            return replace(
                linked, acknowledged=True, next_escalation_level=None, next_escalation_at=None
            )
        case EventType.INCIDENT_ESCALATED:
            return replace(
                linked,
                escalation_level=max(linked.escalation_level, _int(event, "level") or 0),
                tenant_escalated=linked.tenant_escalated
                or event.attributes.get("reason") == "tenant_notification_failed",
                next_escalation_level=_int(event, "next_escalation_level"),
                next_escalation_at=_ms(event, "next_escalation_at"),
            )
        case EventType.INCIDENT_RESOLVED:
            return _end_episode(linked)
        case EventType.NOTIFICATION_SENT | EventType.NOTIFICATION_FAILED:
            if event.incident_id != linked.incident_id:
                return linked
            key = event.attributes.get("dedup_key", "")
            return replace(linked, notified=linked.notified | {key})
        case EventType.NOTIFICATION_SUPPRESSED | EventType.COMMAND_REJECTED:
            return linked
        case _:
            assert_never(kind)


def fold(record: Record, events: Iterable[AuditEvent]) -> Record:
    for event in events:
        record = evolve(record, event)
    return record
