"""Two workers in one group while pings flow: nothing lost, nothing conflicting, no false
detection. (SIGKILLs at random points: tests/faults/test_crash.py.)"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from agents.policyfile import load_policy
from streams.models import AuditEvent, EventType
from tests.kafka.fleet import Fleet
from tests.kafka.harness import (
    Namespace,
    Worker,
    compare_with_reference,
    fleet_policy,
    read_audit,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return fleet_policy(tmp_path, heartbeat_s=30)


def served_inputs(worker: Worker) -> float:
    """connector_inputs_total from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("connector_inputs_total"):
                return float(line.split()[-1])
    raise AssertionError("no connector_inputs_total on /metrics")


def detections(events: list[AuditEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for event in events:
        if event.type is EventType.FAILURE_DETECTED:
            out[event.connector_id] = out.get(event.connector_id, 0) + 1
    return out


def test_librdkafka_pings_and_cli_commands_meet_in_one_decider(
    ns: Namespace, policy_file: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(ns, policy=policy_file).start())
    connectors = [f"CRM-{i:02d}" for i in range(12)]
    fleet = Fleet(
        ns.bootstrap, ns.topics.health, connectors, failing={c: {3} for c in connectors}
    ).start()
    wait_for(lambda: fleet.rounds > 6, 30, "the fleet to publish")
    results = [
        ns.cli("silence", c, "--until", "2099-01-01T00:00:00Z", "--actor", "ops")
        for c in connectors[:4]
    ]
    fleet.stop()
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    wait_caught_up(ns)
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    for connector in connectors:
        mine = [e for e in events if e.connector_id == connector]
        assert [e.sequence for e in mine] == list(range(1, len(mine) + 1)), connector
        assert mine[0].type is EventType.FAILURE_DETECTED
    silenced = {e.connector_id for e in events if e.type is EventType.SILENCED}
    assert silenced == set(connectors[:4])
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)


def test_two_workers_split_the_connectors_and_one_takes_over(
    ns: Namespace, policy_file: Path, workers: list[Worker]
) -> None:
    first = Worker(ns, "w1", policy=policy_file).start()
    second = Worker(ns, "w2", policy=policy_file).start()
    workers.extend([first, second])
    connectors = [f"ERP-{i:02d}" for i in range(16)]
    failing = {"ERP-00": {5}, "ERP-07": {5}, "ERP-11": {60}, "ERP-13": {60}}
    fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, failing=failing).start()
    wait_for(lambda: fleet.rounds > 10, 30, "the fleet to publish")
    wait_for(
        lambda: served_inputs(first) > 0 and served_inputs(second) > 0,
        60,
        "both workers to process inputs",
    )
    assert second.stop() == 0  # a clean SIGTERM: its partitions move to the first worker
    wait_for(lambda: fleet.rounds > 70, 60, "more rounds after the hand-over")
    fleet.stop()
    wait_caught_up(ns)
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    # each failure window detected exactly once; no connector detected falsely
    assert detections(events) == {"ERP-00": 1, "ERP-07": 1, "ERP-11": 1, "ERP-13": 1}
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
