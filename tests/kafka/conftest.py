from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.harness import Namespace, Worker

pytestmark = pytest.mark.kafka


@pytest.fixture
def ns(kafka: str, tmp_path: Path) -> Namespace:
    return Namespace(kafka, tmp_path)


@pytest.fixture
def worker(ns: Namespace) -> Iterator[Worker]:
    running = Worker(ns).start()
    yield running
    running.kill()
