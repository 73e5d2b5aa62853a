"""Projections (MTTR/MTTD/MTTA) and the compliance checks of the verify fold."""

from __future__ import annotations

import pytest

from agents.testing.driver import Driver
from streams.chain import chain_hash
from streams.models import AdminAction, AuditEvent, EventType
from streams.projections import (
    PLATFORM_TENANT,
    Projection,
    group_totals,
    nearest_rank,
    summarize,
    totals,
    windowed_totals,
)
from streams.verify import verify_events


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 50) == 50
    assert nearest_rank(values, 90) == 90
    assert nearest_rank(values, 99) == 99
    summary = summarize([4.0, 1.0, 3.0, 2.0])
    assert (summary.count, summary.mean, summary.p50, summary.p90, summary.p99) == (
        4,
        2.5,
        2.0,
        4.0,
        4.0,
    )
    assert summarize([]).mean is None


def two_connectors() -> list[AuditEvent]:
    a = Driver(connector_id="SAP-AR", tenant_id="acme")
    a.ping(True)
    a.advance(10)
    a.ping(False)
    a.advance(4)
    a.ping(True)  # MTTR 4 s
    for _ in range(20):  # steady checks in between, so this is no flapping
        a.advance(5)
        a.ping(True)
    a.ping(False)
    a.advance(8)
    a.ping(True)  # MTTR 8 s
    b = Driver.with_policy({"defaults": {"max_retries": 0}}, connector_id="CRM-1", tenant_id=None)
    b.ping(False)
    b.advance(30)
    b.admin(AdminAction.ACKNOWLEDGE, incident=b.state.record.incident_id)  # MTTA 30 s
    return a.events + b.events


def test_mttr_per_connector_and_tenant() -> None:
    projection = Projection().apply_all(two_connectors())
    by_connector = group_totals(projection.episodes.values(), "connector")
    assert by_connector["SAP-AR"].failure_count == 2
    assert by_connector["SAP-AR"].mttr_seconds.as_dict() == {
        "count": 2,
        "mean": 6.0,
        "p50": 4.0,
        "p90": 8.0,
        "p99": 8.0,
    }
    assert by_connector["CRM-1"].open_incidents == 1
    assert by_connector["CRM-1"].mtta_seconds.mean == 30.0
    by_tenant = group_totals(projection.episodes.values(), "tenant")
    assert set(by_tenant) == {"acme", PLATFORM_TENANT}
    overall = totals(projection.episodes.values())
    assert (overall.failure_count, overall.recovered_count, overall.open_incidents) == (3, 2, 1)


def test_windowed_totals_split_by_detection_time() -> None:
    projection = Projection().apply_all(two_connectors())
    windows = windowed_totals(projection.episodes.values(), width_ms=60_000)
    assert sum(w.failure_count for w in windows.values()) == 3
    assert len(windows) >= 2


def test_projection_state_equals_the_live_record() -> None:
    d = Driver()
    d.ping(False)
    d.run_for(100)
    projection = Projection().apply_all(d.events)
    assert projection.records["SAP-AR"] == d.state.record


def rechain(events: list[AuditEvent]) -> list[AuditEvent]:
    """Re-hash a forged history so the chain itself is intact (only compliance can catch it)."""
    out: list[AuditEvent] = []
    prev = "0" * 64
    for sequence, event in enumerate(events, start=1):
        fields = event.model_dump() | {
            "sequence": sequence,
            "prev_hash": prev,
            "event_id": f"{event.connector_id}:{sequence}",
        }
        fields["hash"] = chain_hash(prev, fields)
        out.append(AuditEvent.model_validate(fields))
        prev = fields["hash"]
    return out


def test_missed_deadline_is_a_compliance_gap_only_after_the_grace() -> None:
    d = Driver()
    d.ping(False)  # schedules attempt 1 within a second; the worker then goes silent
    other = Driver(connector_id="OTHER")
    other.now = d.now + 30_000
    other.ping(False)
    findings = verify_events(d.events + other.events, grace_ms=60_000)
    assert not [f for f in findings if f.kind == "deadline_missed"]
    other.now = d.now + 120_000
    other.ping(True)
    findings = verify_events(d.events + other.events, grace_ms=60_000)
    missed = [f for f in findings if f.kind == "deadline_missed"]
    assert [f.connector_id for f in missed] == ["SAP-AR"]


def test_completion_without_detection_and_incomplete_receipt_are_gaps() -> None:
    d = Driver()
    d.ping(False)
    d.advance(1)
    d.ping(True)
    detected, completed = d.events[0], d.events[-1]
    assert completed.type is EventType.RECOVERY_COMPLETED
    stripped = completed.model_copy(
        update={"attributes": {k: v for k, v in completed.attributes.items() if k != "duration_ms"}}
    )
    kinds = [f.kind for f in verify_events(rechain([stripped]), grace_ms=10**12)]
    assert kinds == ["completed_without_detection", "receipt_incomplete"]
    assert verify_events(rechain([detected, completed]), grace_ms=10**12) == []


def test_incident_without_notification_is_a_gap_until_one_is_sent() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False)
    d.advance(300)
    later = Driver(connector_id="CLOCK")
    later.now = d.now
    later.ping(False)
    findings = verify_events(d.events + later.events, grace_ms=60_000)
    assert "incident_without_notification" in {f.kind for f in findings}
    d.deliver_pending()
    findings = verify_events(d.events + later.events, grace_ms=60_000)
    assert [f for f in findings if f.connector_id == "SAP-AR"] == []


@pytest.mark.parametrize("field", ["failure", "actor", "occurred_at"])
def test_a_changed_field_breaks_the_hash(field: str) -> None:
    d = Driver()
    d.ping(False)
    event = d.events[0]
    value: object = event.occurred_at + 1 if field == "occurred_at" else "forged"
    forged = event.model_copy(update={field: value})
    assert [f.kind for f in verify_events([forged], grace_ms=10**12)] == ["hash_mismatch"]
