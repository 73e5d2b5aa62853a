"""A newcomer's first hour on a real broker: the worker runs from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka.harness import Namespace, Worker

pytestmark = pytest.mark.kafka


def test_the_worker_starts_from_an_empty_folder_without_a_data_dir(
    ns: Namespace, workers: list[Worker]
) -> None:
    empty = ns.tmp / "empty"
    empty.mkdir()
    home = ns.tmp / "home"  # no ~/.local/state yet: the worker creates it, parents included
    worker = Worker(
        ns, env={"HOME": str(home), "XDG_STATE_HOME": ""}, cwd=empty, default_data_dir=True
    )
    workers.append(worker)
    worker.start()  # fails unless it logs "ready"
    assert (home / ".local" / "state" / "connector-recovery" / ns.app_id).is_dir()
    assert not list(empty.iterdir())  # nothing written where it was started


def test_kafka_up_uses_a_broker_that_already_answers_on_the_port(
    kafka: str, tmp_path: Path
) -> None:
    # e.g. one started from another copy of the project: its pid file is elsewhere
    host, port = kafka.rsplit(":", 1)
    if host != "127.0.0.1":
        pytest.skip(f"the test broker is not on this machine's loopback ({kafka})")
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "kafka", "up", "--port", port],
        env={**os.environ, "CR_LOCAL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"a Kafka broker already answers on 127.0.0.1:{port}: pid ")


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "--connector", "SAP-AR", "--status", "unhealthy"],
        ["ack", "SAP-AR:1", "--actor", "alice", "--timeout", "5"],
    ],
)
def test_publishing_before_any_worker_created_the_topics_is_one_line(
    ns: Namespace, command: list[str]
) -> None:
    """aiokafka waited its whole request timeout (40 s) for the topic's metadata, logging an
    ERROR line several times a second (~370 lines), before a raw UnknownTopicOrPartition."""
    result = ns.cli(*command, timeout_s=30)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: no topic '{ns.prefix}connector."), lines[0]
    assert "run connector-recovery worker" in lines[0]
