"""The router runs in a child process of the worker (agents/worker/router_process.py): it
ends with its worker, however the worker ends, and a worker whose router died does not go
on looking healthy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.kafka.harness import Worker, wait_for

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


def test_a_worker_whose_router_dies_stops_instead_of_looking_healthy(worker: Worker) -> None:
    assert worker.process is not None
    router = router_of(worker)
    assert router is not None
    os.kill(router, signal.SIGKILL)
    wait_for(
        lambda: worker.process is not None and worker.process.poll() is not None,
        60,
        "the worker to stop after its router died",
    )
    assert worker.process.returncode != 0
    assert "the router process exited" in worker.output()
