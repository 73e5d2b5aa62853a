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

from agents.settings import Settings, Topics
from tests.kafka.harness import Namespace, free_port


def fresh(server: str) -> tuple[Namespace, Settings]:
    """Topic names, app id and a temp dir nobody else uses."""
    ns = Namespace(server, Path(tempfile.mkdtemp()))
    return ns, Settings(
        bootstrap_servers=server, app_id=ns.app_id, topics=Topics().with_prefix(ns.prefix)
    )


@contextmanager
def running_worker(
    ns: Namespace, settings: Settings, ready_timeout_s: float = 1800
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
