"""A first start decides its heartbeat graces before the views hold the fleet, so the
processor's deadline index and the liveness it sets aside are keyed on ids of their own;
once the views hold the fleet they are re-keyed on the views' objects (`share_ids`), in
slices, keeping what the decider changes between two slices (BENCHMARKS.md, P6: ~1 string
per connector, ~25 MiB at 322,000 connectors)."""

from __future__ import annotations

from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.clock import BUCKET_MS
from agents.worker.processor import DictStore, Input, InputProcessor
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy

CONNECTORS = 50
SLICE = 7


def ping(connector_id: str, position: int) -> Input:
    message = HealthPing(
        connector_id=connector_id,
        status=HealthStatus.HEALTHY,
        failure=None,
        checked_at=T0 + position,
        position="lsn-1",
    )
    return Input(Unpacked(message, position, f"in/0/{position}", None, None), 0)


def test_deadlines_and_liveness_are_re_keyed_on_the_views_ids_in_slices() -> None:
    views: dict[str, str] = {}  # empty until the views hold the fleet, as on a first start
    processor = InputProcessor(
        parse_policy({}), DictStore(), partitions=1, states_cached=5, ids=lambda c: views.get(c, c)
    )
    own = [f"C-{index}" for index in range(CONNECTORS)]
    for position, connector in enumerate(own):
        processor.write(processor.process([ping("".join(connector), position)]))
    deadlines = processor.deadlines
    aside = processor._liveness[0]
    assert len(deadlines) == CONNECTORS
    assert len(aside) >= CONNECTORS - 5  # most evicted from the parsed states
    due_before = {c: deadlines._deadline[c] for c in own}
    liveness_before = {c: processor.liveness_of(c) for c in own}

    views.update({connector: "".join(connector) for connector in own})  # equal, other objects
    moved_deadline = due_before[own[-1]] + 3 * BUCKET_MS
    slices = 0
    for _slice in processor.share_ids(SLICE):
        slices += 1
        deadlines.schedule(own[-1], moved_deadline)  # the decider, between two slices

    assert slices >= 3
    index_ids = list(deadlines._deadline) + [
        c for filed in deadlines._buckets.values() for c in filed
    ]
    assert all(connector is views[connector] for connector in index_ids)
    assert all(connector is views[connector] for connector in processor._liveness[0])
    assert {c: processor.liveness_of(c) for c in own} == liveness_before
    assert deadlines._deadline == {**due_before, own[-1]: moved_deadline}
    assert sorted(deadlines.pop_due(max(due_before.values()))) == sorted(own[:-1])
    assert deadlines.pop_due(moved_deadline) == [own[-1]]
