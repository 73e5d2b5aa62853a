"""The adapter over Faust's private current-event variable: a table read or write inside
`acting_for(event)` sees that event (Faust takes the partition of the write from it), and
the variable is restored after."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

from faust.streams import current_event

from agents.worker.faust_context import FaustTableStore, acting_for, shorten_fetch_wait


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


def test_the_fetch_wait_is_set_on_the_started_consumer_only() -> None:
    """`shorten_fetch_wait` reaches aiokafka's fetcher through Faust's consumer thread; the
    names it walks are checked against the installed Faust and aiokafka below."""

    class Fetcher:
        _fetch_max_wait_ms = 1500

    fetcher = Fetcher()
    started = SimpleNamespace(_fetcher=fetcher)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert not shorten_fetch_wait(app)
    app.consumer._thread._consumer = started
    assert shorten_fetch_wait(app, 50)
    assert fetcher._fetch_max_wait_ms == 50


def test_faust_still_hard_codes_the_wait_it_shortens() -> None:
    """Why `shorten_fetch_wait` exists; the private names it walks are checked with every
    other in tests/test_kafka_internals.py."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread  # noqa: PLC0415 - a changed library fails this test, not the collection

    assert "fetch_max_wait_ms=1500" in inspect.getsource(AIOKafkaConsumerThread)
