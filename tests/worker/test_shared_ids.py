"""A first start decides its heartbeat graces before the views hold the fleet, so the
processor's deadline index and the liveness it sets aside are keyed on ids of their own;
once the views hold the fleet they are re-keyed on the views' objects (`share_ids`), in
slices, keeping what the decider changes between two slices (BENCHMARKS.md, P6: ~1 string
per connector, ~25 MiB at 322,000 connectors). Better still, a first start keys them on the
first object met of each id (`HeldIds.first`), and the views' snapshot restored shares
those: no copy is made, and none is freed late, leaving holes in the allocator's pools."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from pathlib import Path
from typing import TypeVar
from unittest.mock import patch

from agents.audit.snapshots import SnapshotFile
from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.clock import BUCKET_MS, DeadlineIndex
from agents.worker.heldids import HeldIds, rekey
from agents.worker.processor import DictStore, Input, InputProcessor
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy
from streams.views import FleetView
from tests.core.test_views import differences, folded
from tests.test_view_snapshots import failed_fleet

CONNECTORS = 50
R = TypeVar("R")
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


def test_a_first_starts_ids_are_the_ones_the_views_snapshot_restores(tmp_path: Path) -> None:
    events = failed_fleet(5, tenant_id=None)
    fleet = folded(events)
    file = SnapshotFile(tmp_path / "views.snapshot")
    with patch("agents.audit.snapshots.RECORDS_PER_LINE", 2):
        asyncio.run(file.save(fleet, None, "audit", {0: len(events)}))

    views = FleetView()  # a first start: the views are empty until the snapshot is restored
    held = HeldIds(lambda: views.records)
    held.first = {}
    met = ["".join(f"F-{index}") for index in range(5)]  # as decoded from a record
    assert [held(connector) for connector in met] == met
    assert all(held("".join(c)) is c for c in met)  # an equal copy met later: the first
    deadlines = DeadlineIndex(held)
    for offset, connector in enumerate(met):
        deadlines.schedule("".join(connector), T0 + offset * BUCKET_MS)
    heads = {held("".join(connector)): offset for offset, connector in enumerate(met)}

    shared = asyncio.run(file.load(held.first))
    unshared = asyncio.run(file.load())
    assert shared is not None
    assert unshared is not None
    assert differences(shared.view, fleet) == differences(unshared.view, fleet) == []
    views = shared.view
    assert all(views.records[c].connector_id is c for c in met)
    assert all(
        views.records[e.connector_id].connector_id is e.connector_id
        for e in views.episodes.values()
    )
    assert drained(rekey(heads, held, 2)) == 0  # nothing to re-key: one object per id
    assert len(list(deadlines.share_ids(2))) == 4  # turns: 5 keys, then 5 filed, 2 by 2
    assert all(key is held(key) for key in [*heads, *deadlines._deadline])

    views = unshared.view  # restored on ids of its own: the worker's indexes must move
    assert all(views.records[c].connector_id is not c for c in met)
    assert drained(rekey(heads, held, 2)) == len(met)
    assert all(key is views.records[key].connector_id for key in heads)


def drained(slices: Generator[None, None, R]) -> R:
    """What a generator of slices returns, once every slice is run."""
    while True:
        try:
            next(slices)
        except StopIteration as done:
            returned: R = done.value
            return returned
