from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.harness import Namespace, Worker
from tests.kafka.httpstub import HttpStub

pytestmark = pytest.mark.kafka


@pytest.fixture
def ns(kafka: str, tmp_path: Path) -> Namespace:
    return Namespace(kafka, tmp_path)


@pytest.fixture
def worker(ns: Namespace) -> Iterator[Worker]:
    running = Worker(ns).start()
    yield running
    running.kill()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers a test starts; each is killed at the end, whatever happened."""
    started: list[Worker] = []
    yield started
    for running in started:
        running.kill()


@pytest.fixture
def http_stub() -> Iterator[HttpStub]:
    stub = HttpStub().start()
    yield stub
    stub.stop()
