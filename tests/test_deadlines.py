"""The worker's in-memory deadline index (agents/worker/clock.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.worker.clock import DeadlineIndex, due_ticks, lagging_partitions


def test_due_connectors_fire_once_in_deadline_order() -> None:
    index = DeadlineIndex()
    index.schedule("B", 200)
    index.schedule("A", 100)
    index.schedule("C", 300)
    assert index.pop_due(99) == []
    assert index.pop_due(250) == ["A", "B"]
    assert index.pop_due(250) == []  # not again until the tick re-indexes them
    assert index.pop_due(1000) == ["C"]


def test_a_deadline_moved_later_is_not_fired_early() -> None:
    index = DeadlineIndex()
    index.schedule("A", 100)
    for later in range(101, 200):  # steady pings push the heartbeat deadline on
        index.schedule("A", later)
    assert len(index._buckets[0]) == 1  # later deadlines file nothing more
    assert index.pop_due(150) == []
    assert index.pop_due(199) == ["A"]


def test_an_earlier_deadline_and_a_cleared_one() -> None:
    index = DeadlineIndex()
    index.schedule("A", 500)
    index.schedule("A", 50)  # an attempt deadline earlier than the heartbeat
    assert index.pop_due(60) == ["A"]
    index.schedule("B", 70)
    index.schedule("B", None)
    assert index.pop_due(1000) == []
    index.schedule("C", 10)
    index.forget()
    assert index.pop_due(1000) == []
    assert len(index) == 0


def test_a_lagging_partition_gets_no_tick_until_it_catches_up() -> None:
    index = DeadlineIndex()
    index.schedule("A", 100)  # partition 0
    index.schedule("B", 100)  # partition 1
    partition = {"A": 0, "B": 1}.__getitem__
    assert due_ticks(index, 150, {1}, partition, retry_ms=50) == ["A"]
    assert due_ticks(index, 180, {1}, partition, retry_ms=50) == []  # asked again at 200
    assert due_ticks(index, 200, {1}, partition, retry_ms=50) == []  # still behind
    assert due_ticks(index, 250, set(), partition, retry_ms=50) == ["B"]  # caught up


def test_an_input_applied_meanwhile_replaces_the_deferred_deadline() -> None:
    index = DeadlineIndex()
    index.schedule("B", 100)
    partition = {"B": 1}.__getitem__
    assert due_ticks(index, 150, {1}, partition, retry_ms=50) == []
    index.schedule("B", 10_000)  # a ping from the backlog moved the heartbeat deadline
    assert due_ticks(index, 300, set(), partition, retry_ms=50) == []
    assert due_ticks(index, 10_000, set(), partition, retry_ms=50) == ["B"]


def test_lag_is_counted_in_records_so_one_batch_of_pings_behind_is_behind() -> None:
    # Each record may be an InputBatch of 500 pings: five records are 2,500 inputs behind.
    assert lagging_partitions({0: 105, 1: 102, 2: None}, {0: 100, 1: 100}) == {0}
    # A partition never delivered yet counts from its start.
    assert lagging_partitions({3: 5}, {}) == {3}


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C"]),
            st.one_of(st.none(), st.integers(0, 4000)),  # ms ahead; None: unscheduled
            st.integers(0, 1500),  # the clock moves on this much, then pops
        ),
        max_size=60,
    )
)
def test_pop_due_equals_a_scan_of_every_deadline(
    steps: list[tuple[str, int | None, int]],
) -> None:
    """Whatever order deadlines move in (later, earlier, cleared, fired and set again), the
    index fires exactly the connectors a scan of the current deadlines finds due."""
    index = DeadlineIndex()
    current: dict[str, int] = {}
    now = 0
    for connector, offset, step in steps:
        deadline = None if offset is None else now + offset
        index.schedule(connector, deadline)
        if deadline is None:
            current.pop(connector, None)
        else:
            current[connector] = deadline
        now += step
        due = sorted(c for c, at in current.items() if at <= now)
        assert sorted(index.pop_due(now)) == due
        for connector_due in due:
            del current[connector_due]
    assert (
        sum(map(len, index._buckets.values())) <= 2 * len(steps) + 3
    )  # stale entries stay bounded
