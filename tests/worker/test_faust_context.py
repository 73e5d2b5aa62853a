"""The adapter over Faust's private current-event variable: a table read or write inside
`acting_for(event)` sees that event (Faust takes the partition of the write from it), and
the variable is restored after; the table store acts for its own event per partition."""

from __future__ import annotations

import inspect
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.streams import current_event

from agents.worker.faust_context import (
    FaustTableStore,
    acting_for,
    quiet_changelog_backpressure,
    shorten_fetch_wait,
)


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


def test_the_table_store_reads_and_writes_as_its_partition_with_no_event_given() -> None:
    table = RecordingTable()
    store = FaustTableStore(table, "inputs")
    store.put(b"k", b"v", 3)
    assert store.get(b"k", 0) == b"v"
    assert [(op, e.message.topic, e.message.partition) for op, e in table.seen] == [
        ("put", "inputs", 3),
        ("get", "inputs", 0),
    ]
    assert current_event() is None


async def test_a_write_on_a_faust_table_goes_to_the_changelog_partition_of_its_input() -> None:
    """On a real Faust table (memory store, no broker: the changelog send waits in the
    producer's buffer): Faust takes the partition from the store's `PartitionEvent` and
    checks its topic against the table's source topic, as it would a stream's event."""
    app = faust.App(f"t-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1", store="memory://")
    inputs = app.topic("inputs", partitions=4, key_type=bytes, value_type=bytes)
    table = app.Table("states", default=None, partitions=4, key_type=bytes, value_type=bytes)

    @app.agent(inputs)
    async def decide(stream: Any) -> None:  # the table's source topic, as in the worker
        async for _ in stream:
            pass

    store = FaustTableStore(table, "inputs")
    store.put(b"SAP-AR", b"state", 2)
    assert store.get(b"SAP-AR", 2) == b"state"
    sent = app.producer.buffer.pending.get_nowait()
    assert sent.message.partition == 2
    assert sent.message.key == b"SAP-AR"
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


def test_fausts_changelog_backpressure_is_logged_as_info_not_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_changelog_backpressure()
    producer_log = logging.getLogger("faust.transport.producer")
    with caplog.at_level(logging.INFO, logger="faust.transport.producer"):
        producer_log.warning("producer buffer full size 1469")
        producer_log.warning("something else")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "producer buffer full size 1469"),
        ("WARNING", "something else"),
    ]
