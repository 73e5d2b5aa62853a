"""The adapter over Faust's private current-event variable: a table read or write inside
`acting_for(event)` sees that event (Faust takes the partition of the write from it), and
the variable is restored after."""

from __future__ import annotations

from typing import Any

from faust.streams import current_event

from agents.worker.faust_context import FaustTableStore, acting_for


class Event:
    """Faust keeps a weak reference to the event: a plain object will do."""


class RecordingTable(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def get(self, key: bytes, default: Any = None) -> Any:
        self.seen.append(("get", current_event()))
        return super().get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.seen.append(("put", current_event()))
        super().__setitem__(key, value)


def test_acting_for_sets_the_current_event_and_restores_it() -> None:
    outer: Any = Event()
    inner: Any = Event()
    assert current_event() is None
    with acting_for(outer):
        assert current_event() is outer
        with acting_for(inner):
            assert current_event() is inner
        assert current_event() is outer
    assert current_event() is None


def test_the_table_store_reads_and_writes_as_the_event_of_the_key_partition() -> None:
    table = RecordingTable()
    store = FaustTableStore(table)
    first, second = Event(), Event()
    store.events = {0: first, 3: second}
    store.put(b"k", b"v", 3)
    assert store.get(b"k", 0) == b"v"
    assert table.seen == [("put", second), ("get", first)]
    assert current_event() is None
