"""`/status` in pages (agents/audit/live.py): a worker of 300,000 connectors answers with
the page asked for, not the fleet; following `next_after` lists every connector once."""

from __future__ import annotations

from typing import Any

from agents.audit.live import exposition, metrics_registry, status
from agents.testing.driver import T0
from streams.models import EventType
from streams.views import FleetView
from tests.core.test_outages import Fleet
from tests.core.test_properties import play
from tests.core.test_views import folded
from tests.kafka.harness import metric_samples


def fleet(connectors: int) -> FleetView:
    events = [
        event
        for index in range(connectors)
        for event in play(
            [("ping", False, True, 5)] * 4,
            connector_id=f"C-{index:03}",
            tenant_id="acme" if index % 3 else "globex",
        ).events
    ]
    return folded(events)


def every_page(view: FleetView, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
    pages, after = [], None
    while True:
        page = status(view, tenant, limit=limit, after=after)
        pages.append(page)
        after = page["next_after"]
        if after is None:
            return pages


def test_the_pages_list_every_connector_once_in_order() -> None:
    view = fleet(25)
    pages = every_page(view, limit=7)
    assert [len(p["connectors"]) for p in pages] == [7, 7, 7, 4]
    shown = [c["connector_id"] for p in pages for c in p["connectors"]]
    assert shown == sorted(view.records) == [f"C-{i:03}" for i in range(25)]
    assert {p["connectors_total"] for p in pages} == {25}
    assert all(len(p["open_incidents"]) == len(pages[0]["open_incidents"]) for p in pages)


def test_a_tenants_pages_hold_only_its_connectors() -> None:
    view = fleet(25)
    pages = every_page(view, limit=4, tenant="globex")
    shown = [c["connector_id"] for p in pages for c in p["connectors"]]
    assert shown == [f"C-{i:03}" for i in range(0, 25, 3)]
    assert {p["connectors_total"] for p in pages} == {9}
    assert status(view, "nobody")["connectors"] == []


def test_a_new_connector_joins_the_listing() -> None:
    view = fleet(3)
    assert [c["connector_id"] for c in status(view)["connectors"]] == ["C-000", "C-001", "C-002"]
    for event in play([("ping", False, True, 5)] * 4, connector_id="B-1").events:
        view.apply(event)
    assert [c["connector_id"] for c in status(view, limit=2)["connectors"]] == ["B-1", "C-000"]
    assert status(view, limit=2, after="C-001")["next_after"] is None


def test_open_outages_are_listed_with_their_size() -> None:
    outages = Fleet()
    for index in range(6):
        outages.ping(f"SAP-{index}", False, T0 + index * 100, dependency="erp")
    view = folded(outages.log)
    [outage] = status(view)["open_outages"]
    assert (outage["group"], outage["connectors"], outage["tenant_id"]) == (
        "dependency:erp",
        6,
        None,
    )
    assert status(view, "acme")["open_outages"] == []  # the platform's, not a tenant's


def test_outages_time_to_resolve_is_on_metrics() -> None:
    outages = Fleet()
    for index in range(6):
        outages.ping(f"SAP-{index}", False, T0 + index * 100, dependency="erp")
    for index in range(6):
        outages.ping(f"SAP-{index}", True, T0 + 42_000 + index * 100, dependency="erp")
    view = folded(outages.log)
    (opened,) = [e for e in outages.log if e.type is EventType.OUTAGE_OPENED]
    (resolved,) = [e for e in outages.log if e.type is EventType.OUTAGE_RESOLVED]
    samples = metric_samples(exposition(metrics_registry(lambda: view, {})).decode())
    key = '{tenant="_platform"}'
    assert samples["connector_outage_time_to_recover_seconds_count" + key] == 1
    assert samples["connector_outage_time_to_recover_seconds_sum" + key] == (
        (resolved.occurred_at - opened.occurred_at) / 1000
    )
    assert samples["connector_open_outages" + key] == 0
    assert samples["connector_outages_total" + key] == 1
