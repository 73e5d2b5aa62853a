"""P5: state size and recovery. N connectors' states are written straight into the state
table's changelog (as the worker would have), then a fresh worker (empty data dir) starts:
measured are the bytes per connector in the changelog and in RocksDB, and the time from the
worker's start to 'ready': the bulk pre-restore of the changelog (agents/worker/restore.py),
Faust's replay of the tail, and the assignment scan. The heartbeat graces go out after
'ready'. With CR_LOGLEVEL=info the worker logs the parts; they are read from its log.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker.topics import ensure_topics
from agents.settings import Settings
from agents.wire.partitioning import partition_of
from agents.worker.statecodec import dump_state
from bench.env import env_int
from bench.replay import bootstrap
from bench.worker import fresh, running_worker
from streams.decider import decide
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy
from streams.state import ConnectorState

N = env_int("CR_BENCH_CONNECTORS", 1_000_000)


def typical_state(connector_id: str) -> bytes:
    """A steady healthy connector: 21 healthy checks, tenant set, a source position."""
    policy = parse_policy({})
    state = ConnectorState.new(connector_id)
    for i in range(21):
        ping = HealthPing(
            connector_id=connector_id,
            tenant_id="acme",
            status=HealthStatus.HEALTHY,
            checked_at=1_800_000_000_000 + i * 1000,
            position=f"offset-{i}",
        )
        state = decide(state, ping, policy).state
    return dump_state(state, 123_456)


async def fill(settings: Settings, changelog: str) -> int:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    changelog, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"}
                )
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=50,
        max_batch_size=1 << 20,
        compression_type=None,
    )
    await producer.start()
    total = 0
    template = typical_state("CONN-0000000")
    try:
        for index in range(N):
            key = f"CONN-{index:07d}".encode()
            value = template.replace(b"CONN-0000000", key)
            total += len(key) + len(value)
            await producer.send(
                changelog, key=key, value=value, partition=partition_of(key, settings.partitions)
            )
        await producer.flush()
    finally:
        await producer.stop()
    return total


# Lines the worker logs at info level (agents/worker/restore.py, agents/worker/app.py).
PARTS = {
    "pre_restore_s": re.compile(r"pre-restored \d+ changelog records in ([\d.]+)s"),
    "table_scan_s": re.compile(r"table scan ([\d.]+)s"),
    "log_ahead_and_checkpoints_s": re.compile(r"log ahead and checkpoints ([\d.]+)s"),
}


def parts_of(log: str) -> dict[str, float | None]:
    found = {name: pattern.search(log) for name, pattern in PARTS.items()}
    return {name: float(match.group(1)) if match else None for name, match in found.items()}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(_repeats: int) -> dict[str, Any]:
    server = bootstrap()
    ns, settings = fresh(server)
    changelog = settings.state_changelog_topic
    started = time.perf_counter()
    payload = asyncio.run(fill(settings, changelog))
    fill_s = time.perf_counter() - started
    started = time.perf_counter()
    with running_worker(ns, settings) as data:
        ready_s = time.perf_counter() - started
        rocksdb = du(data)
    parts = parts_of((ns.tmp / "worker.log").read_text(errors="replace"))
    result = {
        "connectors": N,
        "changelog_bytes_per_connector": payload / N,
        "rocksdb_bytes_per_connector": rocksdb / N,
        "changelog_fill_s": fill_s,
        "recovery_to_ready_s": ready_s,
        "parts_s": parts,
        "goals": {"bytes_per_connector": 1024, "recovery_s": 60},
    }
    print(f"P5 state: {N:,} connectors")
    print(f"  changelog payload : {result['changelog_bytes_per_connector']:.0f} B/connector")
    print(f"  RocksDB on disk   : {result['rocksdb_bytes_per_connector']:.0f} B/connector")
    print(f"  fresh worker ready: {ready_s:.1f} s (changelog written in {fill_s:.1f} s)")
    for name, seconds in parts.items():
        print(f"    {name:<28}: {'-' if seconds is None else f'{seconds:.1f} s'}")
    return result
