"""A batch of inputs that decides more new states than `Settings.states_unsent` sends and
writes them a part at a time (a start's heartbeat graces decide one per connector: 322,000
held at once were ~300 MB and seconds of the collector's passes), each part's events
before its states, as smaller batches would."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agents.settings import Settings
from agents.testing.driver import T0
from agents.wire.codec import registry
from agents.wire.records import input_record
from agents.worker.app import WorkerApp
from agents.worker.processor import DictStore, InputProcessor, Outputs
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy

TOPIC = "inputs"


class Broker:
    """The effects' send: what each part held, and whether the table had any of it yet."""

    def __init__(self, store: DictStore) -> None:
        self.store = store
        self.parts: list[list[bytes]] = []
        self.table_ahead = False

    async def send_outputs(self, outputs: Outputs, _checkpoints: Any) -> None:
        keys = list(outputs.states)
        self.parts.append(keys)
        self.table_ahead |= any(self.store.get(key, 0) is not None for key in keys)


def decider(states_unsent: int) -> tuple[WorkerApp, DictStore, Broker]:
    """The worker's decide path over a dict store, without Faust or a broker."""
    store = DictStore()
    worker = object.__new__(WorkerApp)
    worker.settings = Settings(states_unsent=states_unsent)
    worker.registry = registry()
    worker.counters = {}
    worker.positions = {}
    worker.repairs_written = asyncio.Event()
    worker.store = store  # type: ignore[assignment]  # the table's store, as the processor's
    worker.processor = InputProcessor(parse_policy({}), store, partitions=1)
    worker.recovery = SimpleNamespace(next_offsets={})  # type: ignore[assignment]  # no gaps here
    worker.checkpoints = SimpleNamespace(positions={0: 0})  # type: ignore[assignment]
    broker = Broker(store)
    worker.effects = broker  # type: ignore[assignment]  # sends are all this test watches
    unsent = SimpleNamespace(buffer=SimpleNamespace(size=0))  # Faust's changelog: none waiting
    worker.app = SimpleNamespace(producer=unsent)  # type: ignore[assignment]
    return worker, store, broker


def pings(count: int) -> list[Any]:
    """Faust's events of `count` records of the inputs topic: a first ping of a connector each."""
    codec = registry().codec("HealthPing")
    events = []
    for offset in range(count):
        ping = HealthPing(
            connector_id=f"C-{offset:03d}", status=HealthStatus.HEALTHY, checked_at=T0
        )
        message = SimpleNamespace(topic=TOPIC, partition=0, offset=offset)
        events.append(SimpleNamespace(message=message, value=codec.encode(input_record(ping))))
    return events


def test_a_batch_past_the_bound_is_sent_and_written_in_parts() -> None:
    worker, store, broker = decider(states_unsent=5)
    asyncio.run(worker.decide_batch(pings(12)))
    assert [len(part) for part in broker.parts] == [5, 5, 2]
    assert not broker.table_ahead  # each part's states written only after it was sent
    assert {key for part in broker.parts for key in part} == {
        f"C-{offset:03d}".encode() for offset in range(12)
    }
    assert all(store.get(f"C-{offset:03d}".encode(), 0) for offset in range(12))
    assert worker.counters["states_unsent_max"] == 5
    assert worker.positions == {0: 11}


def test_a_batch_within_the_bound_is_sent_once() -> None:
    worker, _store, broker = decider(states_unsent=5_000)
    asyncio.run(worker.decide_batch(pings(12)))
    assert [len(part) for part in broker.parts] == [12]
