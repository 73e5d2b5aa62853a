"""Tenant isolation, as properties over random fleets: a tenant's notification only ever
resolves to that tenant's endpoint, and `/status` and `report` filtered by a tenant show
nothing of any other tenant."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.audit.live import status
from agents.audit.log import LogRead, Scope
from agents.audit.report import build
from agents.testing.driver import Driver
from agents.worker.notifier import resolve_target
from streams.models import AuditEvent, NotificationRequest
from streams.policy import NotifyTarget, parse_policy
from streams.projections import tenant_key
from streams.views import FleetView

TENANTS = ["acme", "globex", "initech", None]
POLICY = {
    "defaults": {"failure_threshold": 1, "max_retries": 0},
    "tenants": {t: {"webhook": f"https://hooks.example/{t}"} for t in TENANTS if t},
    "platform_admin": {"webhook": "https://hooks.example/platform"},
}

fleets = st.lists(
    st.tuples(
        st.sampled_from(TENANTS),
        st.lists(st.booleans(), min_size=1, max_size=8),  # health of successive pings
    ),
    min_size=1,
    max_size=6,
)


def run_fleet(fleet: list[tuple[str | None, list[bool]]]) -> tuple[list[Driver], list[AuditEvent]]:
    drivers = []
    events: list[AuditEvent] = []
    for index, (tenant, healths) in enumerate(fleet):
        driver = Driver.with_policy(POLICY, connector_id=f"C{index}", tenant_id=tenant)
        for healthy in healths:
            driver.advance(1)
            events.extend(driver.ping(healthy))
        drivers.append(driver)
    return drivers, events


def strings_in(document: Any) -> set[str]:
    if isinstance(document, dict):
        return set(document) | {s for v in document.values() for s in strings_in(v)}
    if isinstance(document, list):
        return {s for v in document for s in strings_in(v)}
    return {document} if isinstance(document, str) else set()


@settings(max_examples=60, deadline=None)
@given(fleets)
def test_a_tenants_notification_resolves_only_to_its_own_endpoint(
    fleet: list[tuple[str | None, list[bool]]],
) -> None:
    drivers, _ = run_fleet(fleet)
    policy = parse_policy(POLICY)
    for driver in drivers:
        for command in driver.commands:
            if not isinstance(command, NotificationRequest):
                continue
            if command.target.startswith("tenant:"):
                assert command.tenant_id == driver.tenant_id
                target = resolve_target(policy, command)
                assert isinstance(target, NotifyTarget)
                assert target.webhook == f"https://hooks.example/{driver.tenant_id}"
                for other in TENANTS:
                    if other and other != driver.tenant_id:
                        forged = command.model_copy(update={"target": f"tenant:{other}"})
                        with pytest.raises(ValueError, match="addressed to"):
                            resolve_target(policy, forged)


@settings(max_examples=60, deadline=None)
@given(fleets)
def test_status_and_report_for_a_tenant_show_nothing_of_another(
    fleet: list[tuple[str | None, list[bool]]],
) -> None:
    drivers, events = run_fleet(fleet)
    view = FleetView()
    for event in events:
        view.apply(event)
    read = LogRead(source="test", events=[(f"0/{i}", e) for i, e in enumerate(events)])
    owner = {d.connector_id: tenant_key(d.tenant_id) for d in drivers}
    for tenant in {tenant_key(t) for t in TENANTS}:
        foreign = {c for c, t in owner.items() if t != tenant} | {
            t for t in (tenant_key(x) for x in TENANTS) if t != tenant
        }
        shown = status(view, tenant)
        assert {c["connector_id"] for c in shown["connectors"]} <= {
            c for c, t in owner.items() if t == tenant
        }
        assert not strings_in(json.loads(json.dumps(shown))) & foreign
        report = build(read, Scope(tenant=tenant))
        leaked = strings_in(json.loads(json.dumps(report, default=str))) & foreign
        assert not leaked, leaked
