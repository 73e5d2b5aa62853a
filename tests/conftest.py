"""Shared fixtures. The `kafka` fixture is a real broker, in this order of preference:
`KAFKA_BOOTSTRAP_SERVERS` if set; else a testcontainers KafkaContainer when a Docker engine
answers; else the project's own local KRaft broker (agents.broker.local), started once per
session and stopped at the end if this session started it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

TEST_KAFKA_PORT = int(os.environ.get("CR_TEST_KAFKA_PORT", "19092"))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=10)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - only with Docker

        with KafkaContainer("apache/kafka:4.0.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from agents.broker.local import Broker  # noqa: PLC0415 - only when no broker is given and Docker is absent

    broker = Broker(TEST_KAFKA_PORT)
    started_here = broker.pid() is None
    print(broker.up())
    yield broker.bootstrap
    if started_here:
        broker.down()
