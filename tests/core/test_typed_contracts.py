"""The closed sets the decider writes and `evolve`, the projections and the report read are
enums with the wire values they always had: a misspelt kind or reason is a mypy error in
the code, and an evidence error (not a silently different state) in a log."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from streams.decider import DeadlineKind, next_deadline
from streams.evidence import EvidenceError, IncidentEscalated, IncidentOpened, read
from streams.evolve import _NO_ATTEMPTS, _NO_EPISODE, CHAIN_FIELDS, Changes
from streams.models import (
    EscalationReason,
    FailureCause,
    NotificationKind,
    OpenReason,
)
from streams.state import Phase, Record

ROOT = Path(__file__).resolve().parents[2]


def test_the_wire_values_are_the_strings_of_the_logs_already_written() -> None:
    assert [kind.value for kind in NotificationKind] == [
        "failure_detected",
        "recovered",
        "incident_opened",
        "incident_escalated",
        "flapping_started",
        "flapping_stopped",
        "outage_opened",
        "outage_resolved",
    ]
    assert {reason.value for reason in OpenReason} == {
        "non_retryable",
        "retries_exhausted",
        "manual_recovery_failed",
        "tenant_notification_failed",
        "notification_failed",
    }
    assert {reason.value for reason in EscalationReason} == {
        "unacknowledged",
        "tenant_notification_failed",
        "notification_failed",
    }
    assert {cause.value for cause in FailureCause} == {"heartbeat_missed", "flapping", "unknown"}
    assert {kind.value for kind in DeadlineKind} == {
        "heartbeat",
        "attempt",
        "attempt_timeout",
        "escalation",
        "notify",
    }


def test_a_reason_reads_as_its_enum_and_a_misspelt_one_is_an_evidence_error() -> None:
    escalated = {"level": "0", "target": "platform_admin", "reason": "tenant_notification_failed"}
    assert read(IncidentEscalated, escalated).reason is EscalationReason.TENANT_NOTIFICATION_FAILED
    with pytest.raises(EvidenceError, match="reason 'tenant_notification_fail'"):
        read(IncidentEscalated, {**escalated, "reason": "tenant_notification_fail"})
    with pytest.raises(EvidenceError, match="reason 'retry_exhausted'"):
        read(IncidentOpened, {"reason": "retry_exhausted", "level": "0"})


def test_changes_name_exactly_the_record_fields_an_event_may_set() -> None:
    assert set(Changes.__annotations__) == set(Record._fields) - set(CHAIN_FIELDS)
    assert set(_NO_EPISODE) <= set(Changes.__annotations__)
    assert set(_NO_ATTEMPTS) <= set(Changes.__annotations__)
    assert "phase" not in _NO_EPISODE
    assert "flapping" not in _NO_EPISODE


def test_the_next_deadline_is_named_by_its_kind() -> None:
    failed = Record("SAP-AR", phase=Phase.FAILED, next_attempt_at=5, attempt_deadline=9)
    assert next_deadline(failed, None) == (5, DeadlineKind.ATTEMPT)
    assert next_deadline(Record("SAP-AR"), 7) == (7, DeadlineKind.HEARTBEAT)


def test_a_misspelt_kind_or_reason_is_a_type_error(tmp_path: Path) -> None:
    """What the enums are for: mypy (strict, the project's settings) refuses a string where
    a kind or reason goes, and a `Changes` key that is not a field of the record."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from streams.decider import _escalate, _open_incident, _summary, _Emitter
            from streams.evolve import Changes
            from streams.models import AuditEvent

            def probe(out: _Emitter, event: AuditEvent) -> Changes:
                _open_incident(out, 0, "retries_exhausted")
                _escalate(out, 0, 1, "unacknowledged")
                _summary("recoverd", event)
                return {"attempt_inflight": None}
            """
        )
    )
    stdout, _, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(probe)]
    )
    assert status == 1, stdout
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert len(errors) == 4, stdout
    assert '"attempt_inflight"' in stdout
