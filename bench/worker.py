"""What the benchmarks share: a fresh namespace, and a worker subprocess that is ready."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from agents.broker.client import topic_partitions
from agents.settings import Settings, Topics
from agents.testing.kafka import Namespace, free_port, read_audit
from streams.models import EventType


def fresh(server: str) -> tuple[Namespace, Settings]:
    """Topic names, app id and a temp dir nobody else uses."""
    ns = Namespace(server, Path(tempfile.mkdtemp()))
    return ns, Settings(
        bootstrap_servers=server, app_id=ns.app_id, topics=Topics().with_prefix(ns.prefix)
    )


@contextmanager
def running_worker(
    ns: Namespace, settings: Settings, ready_timeout_s: float = 1800, policy: Path | None = None
) -> Iterator[Path]:
    """Start `connector-recovery worker`, wait until it logs 'ready', yield its data dir,
    stop it at the end. The wait fails if the worker dies or the timeout passes."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CR_APP_ID": settings.app_id,
        "CR_TOPIC_PREFIX": ns.prefix,
        "PYTHONUNBUFFERED": "1",
    }
    data = ns.tmp / "data"
    log_path = ns.tmp / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "worker",
                "--data-dir",
                str(data),
                "--web-port",
                str(free_port()),
                *(["--policy", str(policy)] if policy is not None else []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + ready_timeout_s
            while "ready" not in log_path.read_text(errors="replace").splitlines():
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited; see {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker was not ready in {ready_timeout_s:.0f}s")
                time.sleep(0.05)
            yield data
        finally:
            worker.terminate()
            worker.wait(120)


class SpuriousWork(AssertionError):
    """A benchmark's worker did work the load does not call for: the figure is wrong."""


def audited(ns: Namespace, settings: Settings, failing: set[str]) -> dict[str, int]:
    """The audit events of a benchmark run, by type, after checking that every detection is
    of a connector the load made fail, by its pings (a heartbeat miss, or a detection of a
    healthy connector, is the worker paging for nothing)."""
    counts: dict[str, int] = {}
    false_pages: list[str] = []
    for event in read_audit(ns.bootstrap, settings.topics.audit, timeout_s=5):
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
        if event.type is EventType.FAILURE_DETECTED and (
            event.failure == "heartbeat_missed" or event.connector_id not in failing
        ):
            false_pages.append(f"{event.connector_id} ({event.failure})")
    if false_pages:
        raise SpuriousWork(f"{len(false_pages)} false pages, e.g. {false_pages[:5]}")
    return counts


def policy_file(directory: Path, heartbeat_timeout_s: int) -> Path:
    """The benchmark policy: the defaults, with a heartbeat timeout longer than the run, so
    pings stamped when the load was generated are not missed heartbeats by the time the
    worker reads them."""
    path = directory / "bench-policy.yaml"
    path.write_text(f"defaults:\n  heartbeat_timeout_s: {heartbeat_timeout_s}\n")
    return path


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Every partition of `topic` and its end offset now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()
