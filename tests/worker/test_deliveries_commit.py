"""Executors and notifier commit what they delivered; a commit the group's rebalance
refuses (a worker joined or left) is not a crash: the partition's new owner delivers again
from the last commit, and deliveries are idempotent (R3 at fleet scale crashed a worker)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from agents.worker.deliveries import DeliveryLoop

TP = TopicPartition("notifications", 0)


class RebalancedConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)
        raise CommitFailedError("the group has already rebalanced")


def test_a_commit_refused_by_a_rebalance_is_not_a_crash() -> None:
    async def run() -> RebalancedConsumer:
        consumer = RebalancedConsumer()
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        inflight: dict[TopicPartition, deque[tuple[int, Any]]] = {TP: deque([(41, delivered)])}
        await DeliveryLoop._commit_done(consumer, inflight)
        return consumer

    consumer = asyncio.run(run())
    assert consumer.commits == [{TP: 42}]
