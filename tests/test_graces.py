"""Heartbeat graces (agents/worker/graces.py) as the decider reads them, and the router's
read-back of batch origins (agents/wire/records.batch_origins), without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import ProducerClosed

from agents.settings import Settings
from agents.wire.codec import registry
from agents.wire.partitioning import partition_of
from agents.wire.records import batch_origins, unpack
from agents.worker.graces import GRACE_SOURCE, Graces
from agents.worker.router import BATCH_ITEMS
from streams.models import Watch

AT = 1_800_000_000_000


class Recorder:
    """Stands in for the worker's aiokafka producer: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    async def send(self, topic: str, *, value: bytes, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, value, partition))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def _send_graces(
    connectors: dict[int, set[str]], settings: Settings
) -> list[tuple[str, bytes, int]]:
    recorder = Recorder()
    crashes: list[BaseException] = []

    async def producer() -> Any:
        return recorder

    async def crash(error: BaseException) -> None:
        crashes.append(error)

    graces = Graces(settings, registry(), producer, crash)
    graces.give(connectors, AT)
    assert graces._sending is not None
    await graces._sending
    assert crashes == []
    return recorder.sent


def test_every_connector_gets_one_grace_in_its_own_inputs_partition() -> None:
    settings = Settings(partitions=4)
    connectors = [f"CONN-{i:05d}" for i in range(3 * BATCH_ITEMS)]
    by_partition: dict[int, set[str]] = {}
    for connector_id in connectors:
        by_partition.setdefault(partition_of(connector_id.encode(), 4), set()).add(connector_id)
    sent = asyncio.run(_send_graces(by_partition, settings))
    reg = registry()
    watched: list[str] = []
    for offset, (topic, value, partition) in enumerate(sent):
        assert topic == settings.inputs_topic
        items = unpack(reg, value, topic, partition, offset)
        assert 0 < len(items) <= BATCH_ITEMS
        for item in items:
            assert isinstance(item.message, Watch)
            assert item.message.at == AT
            assert partition_of(item.message.connector_id.encode(), 4) == partition
            watched.append(item.message.connector_id)
        assert batch_origins(reg, value) == [GRACE_SOURCE] * len(items)
    assert sorted(watched) == connectors
    assert len(sent) < len(connectors) / 100  # batched: one record per up to BATCH_ITEMS


def test_batch_origins_are_empty_for_a_single_input_or_garbage() -> None:
    reg = registry()
    tick = reg.codec("Tick").encode({"connector_id": "C", "now": AT})
    assert batch_origins(reg, tick) == []
    assert batch_origins(reg, b"garbage") == []
    assert batch_origins(reg, None) == []


def test_a_worker_stopping_while_its_graces_go_out_is_no_crash() -> None:
    """SIGTERM during a large assignment's graces closes the producer under them: the
    worker stops cleanly (the next owner gives its own graces), it does not crash."""

    class Closing(Recorder):
        async def send(self, topic: str, *, value: bytes, partition: int) -> asyncio.Future[Any]:
            if len(self.sent) == 2:
                raise ProducerClosed()
            return await super().send(topic, value=value, partition=partition)

    closing = Closing()
    crashes: list[BaseException] = []

    async def producer() -> Any:
        return closing

    async def crash(error: BaseException) -> None:
        crashes.append(error)

    async def run() -> None:
        graces = Graces(Settings(partitions=1), registry(), producer, crash)
        graces.give({0: {f"C-{i:05d}" for i in range(5 * BATCH_ITEMS)}}, AT)
        assert graces._sending is not None
        await graces._sending

    asyncio.run(run())
    assert len(closing.sent) == 2
    assert crashes == []
