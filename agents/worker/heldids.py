"""Connector ids as the process already holds them (`WorkerApp.held_id`: the live views'
objects, or on a first start, before the views hold the fleet, the first object met of
each id, which the views' snapshot then shares). An index keyed on copies of its own costs
one more string per connector for good (~20 MiB at 322,000 connectors), and copies freed
late leave holes in the allocator's pools that the process never gives back (P6)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from typing import TypeVar

from streams.state import Record

SHARE_IDS_SLICE = 10_000  # keys re-keyed between two turns of the event loop

V = TypeVar("V")


class HeldIds:
    """A connector id as the process holds it already: the live views' object if they hold
    the connector; on a first start (`first`, until the views hold the fleet) the first
    object met of each id, which the views' snapshot then shares (`SnapshotFile.load`)."""

    def __init__(self, records: Callable[[], Mapping[str, Record]]) -> None:
        self._records = records  # the views' records (the view may be replaced whole)
        self.first: dict[str, str] | None = None

    def __call__(self, connector_id: str) -> str:
        record = self._records().get(connector_id)
        if record is not None:
            return record.connector_id
        first = self.first
        return connector_id if first is None else first.setdefault(connector_id, connector_id)


def rekey(
    mapping: dict[str, V], held: Callable[[str], str], slice_rows: int
) -> Generator[None, None, int]:
    """`mapping` keyed on `held(key)`, in place; yields after every `slice_rows` keys, for
    the caller to give the loop a turn, and an entry changed between two yields is kept as
    it is then. Returns how many keys moved: each takes a new slot (the table grows), so a
    caller whose keys moved keeps `dict(mapping)`, compact, once done."""
    moved = 0
    for row, key in enumerate(list(mapping), 1):
        if not row % slice_rows:
            yield
        if key not in mapping:
            continue
        kept = held(key)
        if kept is not key:  # an equal key keeps its first object: out, then in
            mapping[kept] = mapping.pop(key)
            moved += 1
    return moved


async def rekey_between_turns(
    mapping: dict[str, V], held: Callable[[str], str], slice_rows: int = SHARE_IDS_SLICE
) -> int:
    """`rekey`, with a turn of the event loop after every `slice_rows` keys."""
    slices = rekey(mapping, held, slice_rows)
    while True:
        try:
            next(slices)
        except StopIteration as done:
            moved: int = done.value
            return moved
        await asyncio.sleep(0)
