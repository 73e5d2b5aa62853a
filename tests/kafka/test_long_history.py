"""A worker on an audit topic with a history its state table has never seen (another
cluster's table lost, a table rebuilt from an empty changelog): the first start folds the
history into its views and repairs its table from the log; a clean stop keeps both, so the
second start repeats neither, and the views equal a replay each time. The repair reads the
log in the worker or, as a long one does, in a process of its own."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agents.broker.topics import ensure_topics
from agents.testing.driver import Driver
from agents.wire.codec import registry
from agents.wire.records import audit_record
from streams.models import AuditEvent
from tests.kafka.harness import Namespace, Worker, metric_samples, run, wait_for, web_get

pytestmark = pytest.mark.kafka

CONNECTORS = 600
POLICY = "defaults: {max_retries: 2, attempt_timeout_s: 5, heartbeat_timeout_s: 3600}\n"


def history() -> list[AuditEvent]:
    """Each connector fails and recovers; every tenth fails again and is left failing."""
    events: list[AuditEvent] = []
    for index in range(CONNECTORS):
        driver = Driver.with_policy(
            {"defaults": {"max_retries": 2, "attempt_timeout_s": 5}},
            connector_id=f"HIST-{index:04d}",
            tenant_id=("acme", "globex", None)[index % 3],
        )
        driver.ping(False)
        driver.run_for(20, step=5)
        driver.ping(True)
        driver.deliver_pending()
        if index % 10 == 0:
            driver.advance(60)
            driver.ping(False, retryable=False)
            driver.deliver_pending()
        events.extend(driver.events)
    return events


async def publish(ns: Namespace, events: list[AuditEvent]) -> None:
    """Onto the audit topic, keyed by connector, as a worker writes them."""
    settings = ns.settings()
    await ensure_topics(settings)
    codec = registry().codec("AuditEvent")
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send(
                settings.topics.audit,
                codec.encode(audit_record(event)),
                key=event.connector_id.encode(),
            )
        await producer.flush()
    finally:
        await producer.stop()


# The process's own figures, not the views': they start again with each process.
PROCESS_METRICS = (
    "connector_event_loop_",
    "connector_states_evicted",
    "connector_states_unsent",
    "connector_inputs",
)


def views(worker: Worker) -> tuple[dict[str, Any], dict[str, float]]:
    status = json.loads(web_get(worker, "/status"))
    samples = metric_samples(web_get(worker, "/metrics").decode())
    return status, {k: v for k, v in samples.items() if not k.startswith(PROCESS_METRICS)}


@pytest.mark.parametrize("repair_in", ["worker", "child"])
def test_a_second_start_repeats_nothing_the_first_folded_or_repaired(
    ns: Namespace, tmp_path: Path, workers: list[Worker], repair_in: str
) -> None:
    events = history()
    run(publish(ns, events))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    report = ns.cli("report", "--format", "json", "--quiet")
    assert report.returncode == 0, report.stderr
    replayed = json.loads(report.stdout)["totals"]

    # The first start's fold of the whole history runs in a process of its own (at any
    # length here; by default from 200,000 events), beside the crash repair.
    # So does the crash repair's read of it, when asked to.
    into_child = {
        "CR_VIEWS_FOLD_IN_CHILD_FROM": "1",
        "CR_REPAIR_IN_CHILD_FROM": "1" if repair_in == "child" else "0",
    }
    first = Worker(ns, name="w", policy=policy, env=into_child, loglevel="info").start()
    workers.append(first)
    assert f"{CONNECTORS} connectors folded forward" in first.output()
    read_in_child = "read in a process of its own" in first.output()
    assert read_in_child == (repair_in == "child"), first.output()
    assert "folding in a process of their own" in first.output()
    assert "audit views: restored" in first.output()  # the child's snapshot
    status, metrics = views(first)
    assert len(status["connectors"]) == CONNECTORS
    failing = {c["connector_id"] for c in status["connectors"] if c["phase"] == "FAILED"}
    assert len(failing) == CONNECTORS // 10
    assert len(status["open_incidents"]) == replayed["open_incidents"] == CONNECTORS // 10
    failures = sum(v for k, v in metrics.items() if k.startswith("connector_failure_count_total"))
    assert failures == replayed["failure_count"]
    assert first.stop() == 0
    assert list((ns.tmp / "w-data").glob("*/views/views.snapshot"))
    assert not list((ns.tmp / "w-data").glob("*/repairs/*")), "repaired states left unwritten"

    began = time.monotonic()
    second = Worker(ns, name="w", policy=policy, loglevel="info").start()
    workers.append(second)
    ready_s = time.monotonic() - began
    assert "crash repair" not in second.output(), second.output()
    assert "no usable snapshot" not in second.output()
    assert ready_s <= 15, ready_s
    # The views are restored while Faust starts, before the assignment's table scan, which
    # keys the worker's indexes on their connector ids.
    lines = second.output().splitlines()
    restored = next(i for i, line in enumerate(lines) if "audit views: restored" in line)
    assigned = next(i for i, line in enumerate(lines) if "assigned:" in line)
    assert restored < assigned, "\n".join(lines[restored : assigned + 1] or lines[assigned:])
    again_status, again_metrics = views(second)
    assert again_status == status
    assert {k: v for k, v in again_metrics.items() if k in metrics and v != metrics[k]} == {}

    # The repaired table continues each chain: a healthy ping recovers a failing connector
    # with the next sequence of its history, and the log verifies.
    connector = sorted(failing)[0]
    last = max(e.sequence for e in events if e.connector_id == connector)
    published = ns.cli(
        "publish", "--connector", connector, "--status", "healthy", "--tenant", "acme"
    )
    assert published.returncode == 0, published.stderr

    def recovered() -> bool:
        rows = json.loads(web_get(second, "/status"))["connectors"]
        return any(r["connector_id"] == connector and r["phase"] == "OK" for r in rows)

    wait_for(recovered, 30, f"{connector} to recover")
    row = next(
        r
        for r in json.loads(web_get(second, "/status"))["connectors"]
        if r["connector_id"] == connector
    )
    assert row["sequence"] > last
    verified = ns.cli("verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
