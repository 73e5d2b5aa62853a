"""Connector ids as the process already holds them (`WorkerApp.held_id`: the live views'
objects). A first start builds the worker's indexes (chain heads, deadlines, liveness)
before the views hold the fleet, on ids of its own: one more string per connector and
index for good (~20 MiB each at 322,000 connectors) unless re-keyed once the views do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

SHARE_IDS_SLICE = 10_000  # keys re-keyed between two turns of the event loop

V = TypeVar("V")


def rekey(mapping: dict[str, V], held: Callable[[str], str], slice_rows: int) -> Iterator[None]:
    """`mapping` keyed on `held(key)`, in place; yields after every `slice_rows` keys, for
    the caller to give the loop a turn, and an entry changed between two yields is kept as
    it is then. Each key put in again takes a new slot (the table doubles): the caller
    keeps `dict(mapping)`, compact, once done."""
    for row, key in enumerate(list(mapping), 1):
        if not row % slice_rows:
            yield
        if key in mapping:  # an equal key keeps its first object: out, then in
            mapping[held(key)] = mapping.pop(key)
