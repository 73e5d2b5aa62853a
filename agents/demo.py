"""`connector-recovery demo`: start what is needed, send a failing and a recovering ping for
SAP-AR, and show the evidence the worker wrote to the audit topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

from agents.codec import registry
from agents.producer import ping_from_fields, publish_pings
from agents.settings import Settings, Topics
from agents.wire import decode_audit
from streams.models import AuditEvent, EventType

console = Console(width=None if sys.stdout.isatty() else 150)


def _ensure_kafka() -> str:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured
    from agents.localkafka import Broker  # noqa: PLC0415

    broker = Broker(int(os.environ.get("KAFKA_PORT", "9092")))
    console.print(f"[bold]Kafka:[/] {broker.up()}")
    return broker.bootstrap


async def _read_audit(
    settings: Settings, until: EventType, since_ms: int, timeout_s: float
) -> list[AuditEvent]:
    """This run's audit events (occurred at or after `since_ms`), until one of type `until`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    events: list[AuditEvent] = []
    try:
        tps = [TopicPartition(settings.topics.audit, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(e.type is until for e in events):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                decoded = (decode_audit(registry(), r.value) for r in records)
                events.extend(e for e in decoded if e.occurred_at >= since_ms)
    finally:
        await consumer.stop()
    return sorted(events, key=lambda e: (e.connector_id, e.sequence))


def _wait_ready(process: subprocess.Popen[str], timeout_s: float) -> None:
    assert process.stdout is not None  # noqa: S101 - we created the pipe
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        if line.strip().endswith("ready"):
            return
        if time.monotonic() > deadline:
            break
    raise RuntimeError("the worker did not become ready")


def run_demo() -> int:
    bootstrap = _ensure_kafka()
    # Each run gets its own topics, app id and data dir, so runs never mix their evidence.
    run = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = Settings.from_env().but(
        bootstrap_servers=bootstrap, app_id=run, topics=Topics().with_prefix(f"{run}.")
    )
    data_dir = Path(".local") / run
    started_ms = time.time_ns() // 1_000_000
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CR_APP_ID": settings.app_id,
        "CR_TOPIC_PREFIX": f"{run}.",
        "CR_TICK_INTERVAL_S": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    console.print(f"[bold]Worker:[/] starting (app id {settings.app_id}) ...")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "worker",
            "--data-dir",
            str(data_dir),
            "--web-port",
            os.environ.get("CR_WEB_PORT", "6066"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_ready(worker, 120)
        console.print("[bold]Worker:[/] ready")
        fail = ping_from_fields(
            {
                "connector_id": "SAP-AR",
                "tenant_id": "acme",
                "status": "unhealthy",
                "failure": "timeout",
                "position": "offset-1042",
            }
        )
        asyncio.run(publish_pings(bootstrap, settings.topics.health, [fail]))
        console.print("[bold]Producer:[/] SAP-AR is UNHEALTHY (timeout)")
        asyncio.run(_read_audit(settings, EventType.RECOVERY_STARTED, started_ms, 30))
        heal = ping_from_fields(
            {
                "connector_id": "SAP-AR",
                "tenant_id": "acme",
                "status": "healthy",
                "position": "offset-1042",
            }
        )
        asyncio.run(publish_pings(bootstrap, settings.topics.health, [heal]))
        console.print("[bold]Producer:[/] SAP-AR is HEALTHY again")
        events = asyncio.run(_read_audit(settings, EventType.RECOVERY_COMPLETED, started_ms, 30))
    finally:
        worker.terminate()
        worker.wait(30)
    table = Table(title=f"Audit log ({settings.topics.audit})")
    for column in ("seq", "event", "incident", "attempt", "details", "hash"):
        table.add_column(column)
    for event in events:
        details = ", ".join(
            f"{k}={v}"
            for k, v in event.attributes.items()
            if k
            in (
                "retries",
                "duration_ms",
                "status",
                "next_attempt_at",
                "deadline",
                "position_at_recovery",
            )
        )
        table.add_row(
            str(event.sequence),
            event.type.value,
            event.incident_id or "",
            str(event.attempt or ""),
            details,
            event.hash[:12],
        )
    console.print(table)
    ok = any(e.type is EventType.RECOVERY_COMPLETED for e in events)
    console.print("[green]recovered, receipt recorded[/]" if ok else "[red]no recovery seen[/]")
    return 0 if ok else 1
