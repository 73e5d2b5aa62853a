"""The live views' state (`streams.views.FleetView`) against the fold replay uses
(`Projection`), and a view restored from a snapshot plus the tail against the whole fold."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import Driver
from streams.grouping import is_outage_key
from streams.models import AdminAction, AuditEvent, EventType
from streams.projections import Projection, group_totals, tenant_key
from streams.views import RELATIVE_ACCURACY, FleetView, Sketch
from tests.core.test_outages import play_fleet
from tests.core.test_outages import steps as outage_steps
from tests.core.test_properties import POLICY, play, scripts

TENANTS = ("acme", "globex", None)


@st.composite
def fleet_logs(draw: st.DrawFn) -> list[AuditEvent]:
    """Several connectors' logs (random scripts through the decider), interleaved at random
    with each connector's order kept, some events delivered twice, and a connector an admin
    named that does not exist (only `command.rejected` events)."""
    logs: list[list[AuditEvent]] = []
    for index in range(draw(st.integers(1, 4))):
        driver = play(
            draw(scripts), connector_id=f"C-{index}", tenant_id=TENANTS[index % len(TENANTS)]
        )
        logs.append(driver.events)
    phantom = Driver.with_policy(POLICY, connector_id="NO-SUCH", tenant_id=None)
    phantom.admin(AdminAction.RECOVER, "alice")
    logs.append(phantom.events)
    merged: list[AuditEvent] = []
    cursors = [0] * len(logs)
    while any(c < len(log) for c, log in zip(cursors, logs, strict=True)):
        ready = [i for i, log in enumerate(logs) if cursors[i] < len(log)]
        chosen = draw(st.sampled_from(ready))
        event = logs[chosen][cursors[chosen]]
        cursors[chosen] += 1
        merged.append(event)
        if merged and draw(st.integers(0, 9)) == 0:
            merged.append(draw(st.sampled_from(merged)))  # a re-delivery of an earlier event
    return merged


def folded(events: list[AuditEvent]) -> FleetView:
    view = FleetView()
    for event in events:
        view.apply(event)
    return view


def through_a_file(view: FleetView) -> FleetView:
    """What a snapshot file gives back: the view's data and its parts as JSON, in chunks."""
    chunks = orjson.loads(orjson.dumps(list(view.parts().wire_chunks(2))))
    restored = FleetView.restore(orjson.loads(orjson.dumps(view.snapshot())))
    for kind, values in chunks:
        restored.add(kind, values)
    return restored


def restored_then_tail(events: list[AuditEvent], cut: int) -> FleetView:
    view = through_a_file(folded(events[:cut]))
    for event in events[cut:]:
        view.apply(event)
    return view


def differences(one: FleetView, other: FleetView) -> list[str]:
    a, b = one.as_data(), other.as_data()
    return [key for key in a if a[key] != b[key]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_logs(), st.data())
def test_a_snapshot_plus_the_tail_equals_the_whole_fold(
    events: list[AuditEvent], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(events)))
    assert differences(restored_then_tail(events, cut), folded(events)) == []


def test_a_broken_snapshot_is_caught() -> None:
    """The comparison above fails when the snapshot misses one event (its offset one past
    what it holds), or drops one connector's record."""
    driver = play([("ping", False, True, 5), ("tick", 30), ("ping", True, True, 5)])
    events = driver.events
    whole = folded(events)
    cut = len(events) // 2
    skipping = through_a_file(folded(events[:cut]))
    for event in events[cut + 1 :]:
        skipping.apply(event)
    assert differences(skipping, whole) != []
    dropped = folded(events[:cut])
    dropped.records.clear()
    view = through_a_file(dropped)
    for event in events[cut:]:
        view.apply(event)
    assert differences(view, whole) != []


def within(sketched: float | None, exact: float | None) -> bool:
    if exact is None or sketched is None:
        return sketched is exact
    return math.isclose(sketched, exact, rel_tol=RELATIVE_ACCURACY, abs_tol=1e-9)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_logs())
def test_the_views_figures_equal_a_replays(events: list[AuditEvent]) -> None:
    view = folded(events)
    projection = Projection()
    heads: dict[str, int] = {}
    for event in events:
        if event.sequence > heads.get(event.connector_id, 0):
            heads[event.connector_id] = event.sequence
            projection.apply(event)
    # the fleet: every connector with an event that is not a rejected command (so not
    # NO-SUCH, which an admin named but does not exist)
    fleet = {e.connector_id for e in events if e.type is not EventType.COMMAND_REJECTED}
    assert "NO-SUCH" not in fleet
    # the view keeps every field of the replay's records but `notified` (decider memory that
    # no view shows)
    assert view.records == {
        k: r._replace(notified=frozenset()) for k, r in projection.records.items() if k in fleet
    }
    replayed = group_totals(list(projection.episodes.values()), "tenant")
    assert set(view.tenants) == set(replayed)
    for key, totals in replayed.items():
        figures = view.tenants[key]
        assert (figures.failures, figures.recovered) == (
            totals.failure_count,
            totals.recovered_count,
        )
        assert len(view.open_incidents(key)) == totals.open_incidents
        mttr = totals.mttr_seconds
        assert figures.mttr_seconds(None) == pytest.approx(mttr.mean)
        for percentile, exact in ((50, mttr.p50), (90, mttr.p90), (99, mttr.p99)):
            assert within(figures.mttr_seconds(percentile), exact)
    opened = {
        e.incident_id: e.acknowledged_by for e in projection.episodes.values() if e.incident_open
    }
    assert {e.incident_id: e.acknowledged_by for e in view.open_incidents()} == opened
    failed: dict[str, int] = {}
    for record in view.records.values():
        failed[tenant_key(record.tenant_id)] = failed.get(tenant_key(record.tenant_id), 0) + (
            record.phase.value == "FAILED"
        )
    assert view.failed_now() == failed


@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=300), st.floats(1, 100))
def test_a_sketchs_percentile_is_within_its_accuracy(values: list[int], percentile: float) -> None:
    sketch = Sketch()
    for value in values:
        sketch.add(value)
    ordered = sorted(values)
    exact = ordered[max(1, math.ceil(percentile / 100 * len(ordered))) - 1]
    assert within(sketch.quantile_ms(percentile), float(exact))
    again = Sketch.from_wire(orjson.loads(orjson.dumps(sketch.to_wire())))
    assert again.quantile_ms(percentile) == sketch.quantile_ms(percentile)


def test_the_view_holds_the_fleet_not_the_history() -> None:
    """One connector failing and recovering 300 times over days: one record, no open
    episode, and trend windows bounded by the ladder, however long the history."""
    driver = Driver.with_policy({"defaults": {"max_retries": 2, "attempt_timeout_s": 5}})
    for _ in range(300):
        driver.ping(False)
        driver.run_for(20, step=5)
        driver.ping(True)
        driver.deliver_pending()
        for _ in range(42):  # healthy long enough not to be judged flapping
            driver.advance(300)
            driver.ping(True)
    view = folded(driver.events)
    assert len(view.records) == 1
    assert view.episodes == {}
    figures = view.tenants["acme"]
    assert figures.failures == len(driver.of_type(EventType.FAILURE_DETECTED)) > 100
    assert sum(len(windows) for windows in figures.windows.values()) <= 3 * 24 + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outage_steps, st.booleans(), st.data())
def test_outages_in_the_view_equal_a_replays_and_survive_a_snapshot(
    script: list[Any], settle: bool, data: st.DataObject
) -> None:
    """Connectors failing for one cause open outages (docs/outages.md): the view's open
    outages and its count of opened ones are the projection's; outages' chains are not
    connectors; a snapshot at any event plus the tail gives the same view."""
    log = play_fleet(script, settle).log
    view = folded(log)
    projection = Projection().apply_all(log)
    assert not any(is_outage_key(key) for key in view.records)
    assert {o.outage_id for o in view.open_outages()} == {
        o.outage_id for o in projection.outages.values() if o.resolved_at is None
    }
    assert sum(view.outages_opened.values()) == len(projection.outages)
    cut = data.draw(st.integers(0, len(log)))
    assert differences(restored_then_tail(log, cut), view) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_logs())
def test_a_snapshot_of_another_version_restores_by_field_name(events: list[AuditEvent]) -> None:
    """A snapshot written by a version whose records had a field less (it takes its
    default) and whose records and episodes had one more (dropped) restores to the same
    view: an upgrade does not fold the whole history again."""
    view = folded(events)
    data = orjson.loads(orjson.dumps(view.snapshot()))
    chunks = orjson.loads(orjson.dumps(list(view.parts().wire_chunks(3))))
    gone, field_index = "outage_id", data["record_fields"].index("outage_id")
    assert all(r.outage_id is None for r in view.records.values())  # its default

    def older(values: list[Any], index: int) -> list[Any]:
        return [*values[:index], *values[index + 1 :], "a field since removed"]

    data["record_fields"] = [f for f in data["record_fields"] if f != gone] + ["retired"]
    data["episode_fields"] = [*data["episode_fields"], "since_removed"]
    for key in ("rejected_only", "outage_chains"):
        data[key] = [older(values, field_index) for values in data[key]]
    data["closed"] = {k: [[*e, None] for e in recent] for k, recent in data["closed"].items()}
    restored = FleetView.restore(data)
    for kind, written in chunks:
        if kind == "records":
            restored.add(kind, [older(v, field_index) for v in written])
        elif kind == "episodes":
            restored.add(kind, [[*v, None] for v in written])
        else:
            restored.add(kind, written)
    assert differences(restored, view) == []


def by_partition_key(log: list[AuditEvent]) -> list[list[AuditEvent]]:
    """Each key's events in their order: what one audit partition keeps of them."""
    keyed: dict[str, list[AuditEvent]] = {}
    for event in log:
        keyed.setdefault(event.connector_id, []).append(event)
    return list(keyed.values())


@st.composite
def interleaving(draw: st.DrawFn, logs: list[list[AuditEvent]]) -> list[AuditEvent]:
    """The keys' logs merged at random, each key's order kept: how a follower reading many
    partitions may meet them."""
    cursors = [0] * len(logs)
    merged: list[AuditEvent] = []
    while ready := [i for i, log in enumerate(logs) if cursors[i] < len(log)]:
        chosen = draw(st.sampled_from(ready))
        merged.append(logs[chosen][cursors[chosen]])
        cursors[chosen] += 1
    return merged


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(scripts, min_size=2, max_size=6), st.data())
def test_the_view_is_the_same_whatever_order_the_partitions_are_read_in(
    connector_scripts: list[Any], data: st.DataObject
) -> None:
    """Two followers (two workers, a page, a fold in a process of its own) meet the
    partitions' events in different orders: their views are equal, down to which closed
    incidents are the latest (each connector's events at the same times here: ties)."""
    logs = [  # one tenant: its closed incidents come from several connectors
        play(script, connector_id=f"C-{index}", tenant_id="acme").events
        for index, script in enumerate(connector_scripts)
    ]
    one, other = data.draw(interleaving(logs)), data.draw(interleaving(logs))
    assert differences(folded(one), folded(other)) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outage_steps, st.data())
def test_outages_in_the_view_are_the_same_whatever_order_the_partitions_are_read_in(
    script: list[Any], data: st.DataObject
) -> None:
    logs = by_partition_key(play_fleet(script, settle=True).log)
    one, other = data.draw(interleaving(logs)), data.draw(interleaving(logs))
    assert differences(folded(one), folded(other)) == []
