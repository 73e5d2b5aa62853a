"""Outages in `replay` and `report` (no Kafka): each outage with its connectors, MTTR per
outage equal to a reference fold of the log, per tenant; outage chains are not connectors;
a tenant scope shows no outage spanning other tenants."""

from __future__ import annotations

import json

from agents.audit import report
from agents.audit.log import LogRead, Scope
from agents.testing.driver import T0
from streams.models import AuditEvent, EventType
from streams.projections import Projection
from tests.core.test_outages import Fleet


def as_read(events: list[AuditEvent]) -> LogRead:
    return LogRead("test", [(f"#{i}", e) for i, e in enumerate(events)])


def outage_log() -> Fleet:
    """Six connectors of two tenants behind sap-prod fail and recover 30 s later; five of
    globex fail with http_503 and stay down; one unrelated failure."""
    fleet = Fleet()
    for index in range(6):
        tenant = "acme" if index % 2 else "globex"
        fleet.ping(f"SAP-{index}", False, T0 + index * 200, tenant_id=tenant, dependency="sap-prod")
    for index in range(5):
        fleet.ping(f"G-{index}", False, T0 + 1_000 + index, failure="http_503", tenant_id="globex")
    fleet.ping("LONE", False, T0 + 2_000, failure="auth", tenant_id="acme")
    for index in range(6):
        tenant = "acme" if index % 2 else "globex"
        fleet.ping(f"SAP-{index}", True, T0 + 30_000 + index * 1_000, tenant_id=tenant)
    return fleet


def reference_mttr(events: list[AuditEvent]) -> dict[str, float | None]:
    """resolved - opened, per outage id, straight from the events."""
    opened = {e.event_id: e.occurred_at for e in events if e.type is EventType.OUTAGE_OPENED}
    resolved = {e.incident_id: e.occurred_at for e in events if e.type is EventType.OUTAGE_RESOLVED}
    return {
        outage_id: None if outage_id not in resolved else (resolved[outage_id] - at) / 1000
        for outage_id, at in opened.items()
    }


def test_the_report_lists_each_outage_with_its_connectors_and_mttr() -> None:
    fleet = outage_log()
    built = report.build(as_read(fleet.log), Scope())
    outages = built["outages"]
    assert (outages["count"], outages["open"]) == (2, 1)
    listed = {o["outage_id"]: o for o in outages["outages"]}
    assert {k: o["mttr_seconds"] for k, o in listed.items()} == reference_mttr(fleet.log)
    sap = listed["outage:dependency:sap-prod:1"]
    assert sap["connectors"] == [f"SAP-{index}" for index in range(6)]
    assert sap["tenant_id"] is None  # spans acme and globex: the platform's
    assert (sap["recovered"], sap["left"]) == (6, 0)
    assert listed["outage:tenant:globex/failure:http_503:1"]["resolved_at"] is None
    # per tenant: the sap-prod outage counts for both of its tenants
    assert outages["tenants"]["acme"]["count"] == 1
    assert outages["tenants"]["globex"]["count"] == 2
    assert outages["mttr_seconds"]["count"] == 1
    assert not any(c.startswith("outage:") for c in built["connectors"])
    assert "## Outages" in report.render(built, "md")
    assert json.loads(report.render(built, "json")) == json.loads(json.dumps(built))


def test_replay_shows_the_same_outage_figures_as_the_report() -> None:
    fleet = outage_log()
    replayed = report.build(as_read(fleet.log), Scope(), detail=False)
    reported = report.build(as_read(fleet.log), Scope())
    figures = {k: v for k, v in reported["outages"].items() if k != "outages"}
    assert replayed["outages"] == figures


def test_each_episode_is_linked_to_its_outage() -> None:
    fleet = outage_log()
    projection = Projection().apply_all(fleet.log)
    assert projection.episodes["SAP-3:1"].outage_id == "outage:dependency:sap-prod:1"
    assert projection.episodes["LONE:1"].outage_id is None
    assert projection.outages["outage:dependency:sap-prod:1"].resolved_at is not None
    # the live views look up the record of every event's chain: outages have one
    # opened, joined, resolved
    assert projection.records["outage:dependency:sap-prod"].sequence == 3


def test_a_tenant_scope_shows_its_own_outages_only() -> None:
    fleet = outage_log()
    built = report.build(as_read(fleet.log), Scope(tenant="acme"))
    assert built["outages"]["count"] == 0  # sap-prod's spans globex too
    text = report.render(built, "md") + report.render(built, "json")
    assert "globex" not in text
    globex = report.build(as_read(fleet.log), Scope(tenant="globex"))
    assert [o["outage_id"] for o in globex["outages"]["outages"]] == [
        "outage:tenant:globex/failure:http_503:1"
    ]
