"""The worker's hold on Faust beyond its public API: the current-event context and the
consumer's fetch wait. The private names themselves are reached through
agents/kafka_internals.py, the one module that names them.

Faust finds the partition of a table read or write (its changelog partition and RocksDB
column) through its current-event context variable, which a `take_events()` batch does not
set for its consumer. `acting_for` sets it, and `FaustTableStore` is the processor's
`StateStore` over a Faust table with it: a write acts for a `PartitionEvent` of its
partition, all Faust reads of the event, so the store needs no event of the batch."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from agents.kafka_internals import faust_current_event, faust_fetcher, set_fetch_max_wait

_CURRENT_EVENT = faust_current_event()


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    token = _CURRENT_EVENT.set(weakref.ref(event))
    try:
        yield
    finally:
        _CURRENT_EVENT.reset(token)


class PartitionEvent:
    """What Faust reads of the current event for a read or write of a table that is not
    windowed: its message's topic (checked once against the table's source topic) and
    partition (the changelog partition and RocksDB column). One per inputs partition, so
    the store needs none of the batch's events."""

    __slots__ = ("__weakref__", "message")  # Faust holds the current event by weak reference

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


class FaustTableStore:
    """A `StateStore` (agents/worker/processor.py) over a Faust table whose partitions are
    those of the topic `topic`: a read or write of a partition acts for that partition
    (`acting_for` a `PartitionEvent`)."""

    def __init__(self, table: Any, topic: str) -> None:
        self.table = table
        self.topic = topic
        self._partitions: dict[int, PartitionEvent] = {}

    def _event(self, partition: int) -> PartitionEvent:
        event = self._partitions.get(partition)
        if event is None:
            event = self._partitions[partition] = PartitionEvent(self.topic, partition)
        return event

    def get(self, key: bytes, partition: int) -> bytes | None:
        with acting_for(self._event(partition)):
            value: bytes | None = self.table.get(key)
            return value

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        with acting_for(self._event(partition)):
            self.table[key] = value


# Faust builds its consumer with fetch_max_wait_ms=1500 and no setting to change it. While
# the records of one partition wait to be consumed, aiokafka leaves that partition out of
# the next fetch, which then long-polls the others (nothing new on them) for the whole wait:
# an input arriving meanwhile waits up to 1.5 s (P2's tail, BENCHMARKS.md).
FETCH_MAX_WAIT_MS = 50


def shorten_fetch_wait(app: Any, wait_ms: int = FETCH_MAX_WAIT_MS) -> bool:
    """Set the fetch wait of the app's started consumer; False while it has none yet."""
    fetcher = faust_fetcher(app)
    if fetcher is None:
        return False
    set_fetch_max_wait(fetcher, wait_ms)
    return True


class _BackpressureIsNotAWarning(logging.Filter):
    """Faust logs "producer buffer full" at WARNING whenever more than 100 table writes
    wait for its changelog, and then flushes them (faust-streaming #173): its own
    backpressure, which every storm and every start's graces meet. Kept, as INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith(
            "producer buffer full"
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_changelog_backpressure() -> None:
    logging.getLogger("faust.transport.producer").addFilter(_BackpressureIsNotAWarning())


def changelog_backlog(app: Any) -> int:
    """Table writes Faust holds for its changelog, not yet handed to its producer."""
    size: int = app.producer.buffer.size
    return size
