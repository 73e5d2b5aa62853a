"""A real Kafka Connect worker (distributed, from Maven Central) on the real broker, watched by
`connector-recovery probe kafka-connect` and recovered by the `kafka_connect` action.

The Connect worker is started once for this module and stopped at the end."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker.client import reader, topic_partitions
from agents.connect.local import ConnectWorker
from agents.wire.codec import registry
from streams.models import AuditEvent, EventType, RecoveryMode
from tests.kafka.harness import (
    Namespace,
    Worker,
    free_port,
    produce_raw,
    read_audit,
    read_records,
    wait_caught_up,
    wait_for,
    wait_for_audit,
)

pytestmark = pytest.mark.kafka

RECORDS = 200
POLICY = """
defaults:
  max_retries: 2
  attempt_timeout_s: 4
  heartbeat_timeout_s: 600
  backoff: {{base_s: 0.2, cap_s: 0.5}}
  recovery_action: {{type: kafka_connect, url: "{url}"}}
"""


# -- Kafka Connect REST ---------------------------------------------------------------------
def rest(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - our own local Connect worker
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def put_connector(connect: ConnectWorker, name: str, config: dict[str, str]) -> None:
    """PUT the config; a worker that is still joining its group answers 409 for a moment."""
    url = f"{connect.url}/connectors/{name}/config"
    wait_for(lambda: rest(url, "PUT", config)[0] in (200, 201), 60, f"Connect to accept {name}")


def task_states(connect: ConnectWorker, name: str) -> list[str]:
    code, body = rest(f"{connect.url}/connectors/{name}/status")
    return [task["state"] for task in body["tasks"]] if code == 200 else []


def file_sink(topic: str, path: Path, tenant: str) -> dict[str, str]:
    return {
        "connector.class": "FileStreamSink",
        "tasks.max": "1",
        "topics": topic,
        "file": str(path),
        "tenant": tenant,
    }


def delete_connector(connect: ConnectWorker, name: str) -> None:
    rest(f"{connect.url}/connectors/{name}", "DELETE")


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


# -- the probe as a user runs it --------------------------------------------------------------
class Probe:
    """`connector-recovery probe kafka-connect` as a subprocess, stopped with SIGTERM."""

    def __init__(self, ns: Namespace, url: str) -> None:
        self.metrics_port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "probe",
                "kafka-connect",
                "--url",
                url,
                "--interval",
                "1",
                "--metrics-port",
                str(self.metrics_port),
            ],
            env=ns.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def metrics(self) -> dict[str, float]:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=3) as response:
                text = response.read().decode()
        except OSError:
            return {}
        found = re.findall(r"^(probe_\w+) (\S+)$", text, re.MULTILINE)
        return {name: float(value) for name, value in found}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def pings_of(ns: Namespace, connector: str) -> list[dict[str, Any]]:
    """Every ping of `connector` on the health topic up to its end as of now (all of them:
    the read stops at the end offsets, not at the first empty poll)."""

    async def read() -> list[dict[str, Any]]:
        consumer = reader(ns.settings())
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, ns.topics.health)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            values: list[bytes] = []
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                values.extend(r.value for records in batch.values() for r in records)
            return [codec.decode(value) for value in values]
        finally:
            await consumer.stop()

    codec = registry().codec("HealthPing")
    return [ping for ping in asyncio.run(read()) if ping["connector_id"] == connector]


def events_of(events: list[AuditEvent], connector: str) -> list[AuditEvent]:
    return [event for event in events if event.connector_id == connector]


def audit_until(ns: Namespace, name: str, kind: EventType, timeout_s: float) -> list[AuditEvent]:
    """The connector's audit events, once one of them is `kind`."""
    events = wait_for_audit(
        ns, lambda found: any(e.type is kind for e in events_of(found, name)), timeout_s, kind
    )
    return events_of(events, name)


def first(events: list[AuditEvent], kind: EventType) -> AuditEvent:
    return next(event for event in events if event.type is kind)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def connect(kafka: str) -> Iterator[ConnectWorker]:
    worker = ConnectWorker(free_port(), kafka, group=f"cr-test-connect-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    print(worker.up())
    print(f"Kafka Connect worker answered after {time.monotonic() - started:.1f}s")
    yield worker
    print(worker.down())


@pytest.fixture(scope="module")
def world(
    kafka: str, connect: ConnectWorker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Namespace, Worker]]:
    tmp = tmp_path_factory.mktemp("kafka-connect")
    ns = Namespace(kafka, tmp)
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(url=connect.url))
    worker = Worker(ns, policy=policy).start()
    yield ns, worker
    worker.kill()


# -- tests ----------------------------------------------------------------------------------------
def test_a_failed_sink_is_detected_retried_escalated_and_recovered_by_hand(
    world: tuple[Namespace, Worker], connect: ConnectWorker
) -> None:
    ns, _ = world
    name = f"{ns.tag}-orders-sink"
    topic = f"{ns.prefix}orders"
    asyncio.run(_create_topic(ns.bootstrap, topic))
    values = [f"order-{number:04d}" for number in range(RECORDS)]
    produce_raw(ns.bootstrap, topic, [(None, value.encode()) for value in values])
    directory = ns.tmp / "sink-out"  # missing: the task cannot open its file
    sink_file = directory / "orders.txt"
    probe = Probe(ns, connect.url)
    try:
        put_connector(connect, name, file_sink(topic, sink_file, tenant="acme"))
        wait_for(lambda: task_states(connect, name) == ["FAILED"], 60, "the sink task to fail")
        failed_seen_ms = time.time_ns() // 1_000_000

        events = audit_until(ns, name, EventType.FAILURE_DETECTED, 60)
        detected = first(events, EventType.FAILURE_DETECTED)
        print(f"task FAILED -> failure.detected: {detected.occurred_at - failed_seen_ms} ms")
        assert detected.tenant_id == "acme"
        assert detected.failure is not None
        assert detected.failure.startswith("ConnectException: Couldn't find or create file")
        assert detected.attributes["retryable"] == "true"
        # nothing consumed yet: the sink's offsets are empty
        assert detected.attributes["position"] == "[]"

        events = audit_until(ns, name, EventType.INCIDENT_OPENED, 90)
        kinds = [e.type for e in events]
        # the policy's two restarts were accepted by Connect (KIP-745, 202) and failed, since
        # the task went FAILED again while the directory was missing
        assert kinds.count(EventType.RECOVERY_ACTION_ACCEPTED) == 2
        assert kinds.count(EventType.RECOVERY_FAILED) == 2
        assert kinds.index(EventType.RETRIES_EXHAUSTED) < kinds.index(EventType.INCIDENT_OPENED)
        assert EventType.RECOVERY_COMPLETED not in kinds
        assert not sink_file.exists()

        directory.mkdir()
        recover_started_ms = time.time_ns() // 1_000_000
        answer = ns.cli("recover", name, "--actor", "alice")
        assert answer.returncode == 0, answer.stderr
        events = audit_until(ns, name, EventType.RECOVERY_COMPLETED, 60)
        completed = first(events, EventType.RECOVERY_COMPLETED)
        print(f"recover -> recovery.completed: {completed.occurred_at - recover_started_ms} ms")
        assert task_states(connect, name) == ["RUNNING"]
        assert completed.actor == "alice"
        assert completed.mode is RecoveryMode.MANUAL
        assert EventType.INCIDENT_RESOLVED in [e.type for e in events]

        # nothing lost, nothing twice
        wait_for(
            lambda: sink_file.exists() and len(sink_file.read_text().splitlines()) >= RECORDS,
            60,
            f"{RECORDS} lines in the sink file",
        )
        check_positions(ns, name, topic, completed)
        # after the offsets are committed, still exactly the records, once each, in order
        assert sink_file.read_text().splitlines() == values
    finally:
        delete_connector(connect, name)
        assert probe.stop() == 0, "\n".join(probe.lines)


def check_positions(ns: Namespace, name: str, topic: str, completed: AuditEvent) -> None:
    """The receipt: where the sink stood at failure (nothing committed) and at the healthy
    check that confirmed the recovery. That check can come before the sink's first offset
    commit (every second), so the position there is either still empty or all records; the
    pings that follow carry the committed offsets."""
    partition = {"kafka_partition": 0, "kafka_topic": topic}
    after = [{"offset": {"kafka_offset": RECORDS}, "partition": partition}]
    receipt = completed.attributes
    assert receipt["position_at_failure"] == "[]"
    assert json.loads(receipt["position_at_recovery"]) in ([], after)
    wait_for(
        lambda: any(
            p["position"] and json.loads(p["position"]) == after for p in pings_of(ns, name)
        ),
        30,
        f"a ping showing the sink's offset {RECORDS}",
    )


def test_a_healthy_source_stays_healthy_with_pings_and_no_audit_events(
    world: tuple[Namespace, Worker], connect: ConnectWorker
) -> None:
    ns, _ = world
    name = f"{ns.tag}-lines-source"
    topic = f"{ns.prefix}lines"
    asyncio.run(_create_topic(ns.bootstrap, topic))
    source_file = ns.tmp / "lines.txt"
    source_file.write_text("".join(f"line {n}\n" for n in range(20)))
    probe = Probe(ns, connect.url)
    try:
        put_connector(
            connect,
            name,
            {
                "connector.class": "FileStreamSource",
                "tasks.max": "1",
                "topic": topic,
                "file": str(source_file),
                "tenant": "globex",
            },
        )
        wait_for(
            lambda: len([p for p in pings_of(ns, name) if p["position"] != "[]"]) >= 3,
            60,
            "three pings of the source with its offsets",
        )
        assert len(read_records(ns.bootstrap, topic, min_count=20, timeout_s=20)) == 20
        # a deleted connector is no longer pinged, and the log suggests retiring it
        delete_connector(connect, name)
        retire = f"`connector-recovery retire {name}`"
        wait_for(lambda: any(retire in line for line in probe.lines), 30, "the retire hint")
        pinged = len(pings_of(ns, name))
        checks = probe.metrics()["probe_checks_total"]
        wait_for(lambda: probe.metrics()["probe_checks_total"] >= checks + 2, 30, "two checks")
        assert len(pings_of(ns, name)) == pinged
        assert len([line for line in probe.lines if retire in line]) == 1
    finally:
        delete_connector(connect, name)
        assert probe.stop() == 0, "\n".join(probe.lines)
    pings = pings_of(ns, name)
    assert {p["status"] for p in pings} == {"HEALTHY"}
    assert {p["tenant_id"] for p in pings} == {"globex"}
    source_offsets = [json.loads(p["position"]) for p in pings if p["position"] != "[]"]
    assert source_offsets[-1][0]["partition"] == {"filename": str(source_file)}
    # every ping has been through the worker: none of them made an audit event
    wait_caught_up(ns)
    assert events_of(read_audit(ns.bootstrap, ns.topics.audit, timeout_s=2), name) == []


def test_the_probe_reports_an_unreachable_connect_on_its_metrics(
    world: tuple[Namespace, Worker],
) -> None:
    ns, _ = world
    probe = Probe(ns, f"http://127.0.0.1:{free_port()}")
    try:
        wait_for(
            lambda: probe.metrics().get("probe_errors_total", 0) >= 3,
            60,
            "three failed checks on the probe's /metrics",
        )
        figures = probe.metrics()
        assert figures["probe_up"] == 0
        assert figures["probe_checks_total"] >= 3
        assert figures["probe_last_success_timestamp_seconds"] == 0
        assert figures["probe_pings_total"] == 0
    finally:
        assert probe.stop() == 0
    outage = [line for line in probe.lines if "does not answer" in line]
    assert len(outage) == 1, probe.lines


def test_the_demo_with_connect_recovers_the_broken_sink(ns: Namespace) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "demo", "--connect"],
        env={
            **ns.env(),
            "CR_DEMO_SECONDS": "45",
            "CR_TOPIC_PREFIX": "",
            "CONNECT_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
        cwd=ns.tmp,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "no compliance findings" in out
    manual = next(line for line in out.splitlines() if line.startswith("manual recoveries:"))
    assert "invoices-sink" in manual  # the policy's restarts failed; repaired, then recovered
    assert "invoices-sink wrote 100 of 100 orders" in " ".join(out.split())
