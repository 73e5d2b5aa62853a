"""The router runs in a child process of the worker (agents/worker/router_process.py): it
ends with its worker, however the worker ends; one that dies is replaced; and a worker
whose router keeps dying does not go on looking healthy."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agents.wire.codec import registry
from agents.worker.router_process import RESTARTS
from streams.models import EventType
from tests.kafka.harness import Namespace, Worker, produce_raw, wait_for, wait_for_audit

pytestmark = pytest.mark.kafka


def router_of(worker: Worker) -> int | None:
    """The pid of the worker's router process, if it has one now."""
    assert worker.process is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == worker.process.pid and b"agents.worker.router_process" in cmdline:
            return int(entry.name)
    return None


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, or not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_router_process_ends_with_its_worker(worker: Worker, how: str) -> None:
    router = router_of(worker)
    assert router is not None, "a ready worker routes in a child process"
    if how == "SIGKILL":
        worker.kill()
    else:
        assert worker.stop() == 0
    wait_for(lambda: not running(router), 30, "the router process to exit after its worker")


def failing_ping(connector_id: str) -> bytes:
    return (
        registry()
        .codec("HealthPing")
        .encode(
            {
                "connector_id": connector_id,
                "tenant_id": None,
                "status": "UNHEALTHY",
                "failure": "timeout",
                "retryable": True,
                "checked_at": int(time.time() * 1000),
                "latency_ms": None,
                "message": None,
                "position": None,
            }
        )
    )


def test_a_killed_router_process_is_replaced_and_routing_goes_on(
    ns: Namespace, worker: Worker
) -> None:
    first = router_of(worker)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: router_of(worker) not in (None, first), 60, "a new router process")
    produce_raw(ns.bootstrap, ns.topics.health, [(b"AFTER-1", failing_ping("AFTER-1"))])
    events = wait_for_audit(
        ns,
        lambda ev: any(e.type is EventType.FAILURE_DETECTED for e in ev),
        60,
        "the ping routed by the new router to be judged",
    )
    assert {e.connector_id for e in events} == {"AFTER-1"}
    assert worker.process is not None
    assert worker.process.poll() is None


def test_a_router_process_that_keeps_exiting_stops_the_worker(worker: Worker) -> None:
    """A worker that no longer routes must not look healthy."""
    for _ in range(RESTARTS):
        router = wait_for(lambda: router_of(worker), 60, "a router process")
        os.kill(router, signal.SIGKILL)
        wait_for(lambda r=router: not running(r), 30, "the router process to die")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
    assert worker.process is not None
    wait_for(
        lambda: worker.process is not None and worker.process.poll() is not None,
        60,
        "the worker to stop",
    )
    assert worker.process.returncode != 0
    assert f"the router process exited {RESTARTS} times" in worker.output()
