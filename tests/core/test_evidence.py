"""The typed views of the attributes map (`streams.evidence`): one per event type, a write
and a read that invert each other on every event the decider writes, errors that name the
key, and a verify fold that reports unreadable evidence instead of crashing on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.audit import log as auditlog
from agents.testing.driver import Driver
from streams import evidence
from streams.evidence import (
    EVENT_TYPE,
    EvidenceError,
    FailureDetected,
    IncidentResolved,
    Provenance,
    RecoveryCompleted,
    RecoveryStarted,
    read,
    write,
)
from streams.models import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, AuditEvent, EventType
from streams.verify import verify_events
from tests.core.test_projections_and_verify import rechain
from tests.old_archive import ARCHIVE_NAME

ARCHIVE = Path(__file__).resolve().parents[1] / "data" / ARCHIVE_NAME
VIEW_OF = {kind: view for view, kind in EVENT_TYPE.items()}


def archived_events() -> list[AuditEvent]:
    return [event for _, event in auditlog.read_archive(ARCHIVE).events]


def test_every_event_type_has_exactly_one_view() -> None:
    assert sorted(VIEW_OF) == sorted(EventType)
    assert len(VIEW_OF) == len(EVENT_TYPE)


def test_read_then_write_gives_back_every_archived_map() -> None:
    """The views cover every key the decider has written: nothing is lost or reformatted."""
    events = archived_events()
    # outages came after the archive was written: tests/core/test_outages.py round-trips them
    newer = {
        EventType.OUTAGE_OPENED,
        EventType.OUTAGE_JOINED,
        EventType.OUTAGE_RESOLVED,
        EventType.OUTAGE_LINKED,
        EventType.NOTIFICATION_RELEASED,
        EventType.OUTAGE_RELEASED,
        EventType.OUTAGE_ACKNOWLEDGED,
        EventType.OUTAGE_RECOVERY_REQUESTED,
    }
    assert {event.type for event in events} == set(EventType) - newer
    for event in events:
        view = read(VIEW_OF[event.type], event.attributes)
        provenance = read(Provenance, event.attributes)
        assert write(view) | write(provenance) == event.attributes, event.event_id


@given(
    st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1),
    st.booleans(),
    st.one_of(st.none(), st.text(min_size=1)),
)
def test_write_then_read_gives_back_the_view(
    at: int, retryable: bool, position: str | None
) -> None:
    view = FailureDetected(
        retryable=retryable,
        first_failing_at=at,
        policy_sha256="ab" * 32,
        position=position,
        next_attempt_at=None if position is None else at + 1,
    )
    assert read(FailureDetected, write(view)) == view


def test_an_absent_optional_field_is_left_out_of_the_map() -> None:
    assert write(IncidentResolved(resolution="superseded")) == {"resolution": "superseded"}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"action": "webhook"}, "lacks deadline"),
        ({"deadline": "next tuesday", "action": "webhook"}, "deadline 'next tuesday' is not"),
    ],
)
def test_a_missing_or_malformed_value_is_an_error_naming_the_key(
    attributes: dict[str, str], message: str
) -> None:
    with pytest.raises(EvidenceError, match=message):
        read(RecoveryStarted, attributes)


def test_closed_values_are_checked() -> None:
    completed = next(e for e in archived_events() if e.type is EventType.RECOVERY_COMPLETED)
    with pytest.raises(EvidenceError, match="status 'done' is not one of recovered"):
        read(RecoveryCompleted, {**completed.attributes, "status": "done"})
    with pytest.raises(EvidenceError, match="mode 'ROBOT' is not one of AUTO, MANUAL"):
        read(RecoveryCompleted, {**completed.attributes, "mode": "ROBOT"})
    with pytest.raises(EvidenceError, match="retryable 'yes' is not true or false"):
        read(FailureDetected, {"retryable": "yes", "first_failing_at": "", "policy_sha256": ""})


def test_receipt_keys_shown_to_auditors_come_from_the_view() -> None:
    assert set(evidence.RECEIPT_KEYS) == set(RecoveryCompleted._fields) - {"trigger"}


def test_unreadable_evidence_is_a_finding_and_the_chain_checks_go_on() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 2}})
    d.ping(False)
    d.run_for(120)
    d.ping(True)
    events = list(d.events)
    started = next(i for i, e in enumerate(events) if e.type is EventType.RECOVERY_STARTED)
    broken = events[started].model_copy(
        update={"attributes": {**events[started].attributes, "deadline": "soon"}}
    )
    findings = verify_events(rechain([*events[:started], broken, *events[started + 1 :]]))
    assert [(f.kind, f.sequence) for f in findings] == [("malformed_evidence", started + 1)]
    assert "deadline 'soon' is not an ISO-8601 instant" in findings[0].detail
