"""Helpers on the real broker that the tests and the benchmarks share: fresh topic names
and app id per run, topic readers, and waits on conditions with timeouts (never
sleep-and-hope)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from agents.kafka_internals import refresh_metadata
from agents.settings import Settings, Topics
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from streams.models import AuditEvent

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    """A local port nothing listens on (connections to it are refused until someone binds)."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Namespace:
    """Fresh topic names and app id for one run, so runs never see each other's data."""

    bootstrap: str
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:
        return f"t{self.tag}."

    @property
    def topics(self) -> Topics:
        return Topics().with_prefix(self.prefix)

    @property
    def app_id(self) -> str:
        return f"cr-{self.tag}"

    def settings(self) -> Settings:
        return Settings(
            bootstrap_servers=self.bootstrap, app_id=self.app_id, topics=self.topics, partitions=4
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "CR_TOPIC_PREFIX": self.prefix,
                "CR_APP_ID": self.app_id,
                "CR_PARTITIONS": "4",
                "CR_SESSION_TIMEOUT_S": "6",
                "CR_TICK_INTERVAL_S": "0.2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def cli(
        self, *args: str, timeout_s: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own CLI (sys.executable -m agents.cli), no shell
            [sys.executable, "-m", "agents.cli", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _read_all(bootstrap: str, topic: str, min_count: int, timeout_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        # Up to each partition's end as it is now, not "until a fetch comes back empty": a
        # fetch right after a broker restart, or on a busy machine, can be empty with
        # records still ahead (a read cut short made the reference fold miss inputs).
        ends = await consumer.end_offsets(tps)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
            at_end = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if at_end and len(records) >= min_count:
                break
            if at_end:  # waiting for `min_count`: what was written since counts too
                ends = await consumer.end_offsets(tps)
        return records
    finally:
        await consumer.stop()


def read_records(bootstrap: str, topic: str, min_count: int = 0, timeout_s: float = 5) -> list[Any]:
    """Every record on `topic` (waits until at least min_count arrived, or the timeout)."""
    result: list[Any] = run(_read_all(bootstrap, topic, min_count, timeout_s))
    return result


def read_audit(
    bootstrap: str, topic: str, min_count: int = 0, timeout_s: float = 5
) -> list[AuditEvent]:
    reg = registry()
    return [
        decode_audit(reg, r.value) for r in read_records(bootstrap, topic, min_count, timeout_s)
    ]


async def _offsets(ns: Namespace, topics: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The end offsets of `topics` and the worker's committed offsets on them, by
    'topic/partition' (a partition nobody committed on counts as committed at 0)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=ns.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        # The router's group consumes the external topics, the worker's the inputs topic.
        committed = {
            **await admin.list_consumer_group_offsets(f"{ns.app_id}-router"),
            **await admin.list_consumer_group_offsets(ns.app_id),
        }
        described = await admin.describe_topics(topics)
        tps = [
            TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
        ]
        if len(tps) < len(topics):
            raise RuntimeError(f"topics not found: {topics}")
        ends = await consumer.end_offsets(tps)
        return (
            {f"{tp.topic}/{tp.partition}": ends[tp] for tp in tps},
            {
                f"{tp.topic}/{tp.partition}": committed[tp].offset if tp in committed else 0
                for tp in tps
            },
        )
    finally:
        await consumer.stop()
        await admin.close()


async def _lag(ns: Namespace, topics: list[str], detail: bool = False) -> Any:
    ends, committed = await _offsets(ns, topics)
    lags = {key: max(0, end - committed[key]) for key, end in ends.items()}
    return lags if detail else sum(lags.values())


def _inputs_topics(ns: Namespace) -> tuple[list[str], str]:
    """The external topics the router reads, and the inputs topic it writes."""
    return [ns.topics.health, ns.topics.admin, ns.topics.recovery_results], f"{ns.app_id}-inputs"


def wait_processed(ns: Namespace, timeout_s: float = 120) -> None:
    """Until the worker has processed every input written before the call: its router has
    committed the external topics up to their end offsets as they were, then its decider
    the inputs topic up to its end offsets as they were then. Unlike `wait_caught_up`, it
    returns while a fleet keeps pinging (a lag of exactly 0 may never be seen then)."""
    external, inputs = _inputs_topics(ns)
    deadline = time.monotonic() + timeout_s
    for topics in (external, [inputs]):
        targets, _ = run(_offsets(ns, topics))

        def reached(want: dict[str, int] = targets, names: list[str] = topics) -> bool:
            _, committed = run(_offsets(ns, names))
            return all(committed[key] >= end for key, end in want.items())

        left = max(1.0, deadline - time.monotonic())
        try:
            wait_for(reached, left, "the worker to process what was written", interval_s=0.5)
        except TimeoutError as error:
            raise TimeoutError(f"{error}: lag {run(_lag(ns, topics, detail=True))}") from None


def wait_caught_up(ns: Namespace, timeout_s: float = 120) -> None:
    """Until the worker's groups have committed every input: health, admin, results, inputs."""
    external, inputs = _inputs_topics(ns)
    topics = [*external, inputs]
    try:
        wait_for(
            lambda: run(_lag(ns, topics)) == 0,
            timeout_s,
            "the worker to catch up",
            interval_s=0.5,
        )
    except TimeoutError as error:
        raise TimeoutError(f"{error}: lag {run(_lag(ns, topics, detail=True))}") from None
