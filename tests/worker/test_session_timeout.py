"""A session timeout above Faust's default request timeout (90 s) starts a worker: Faust
refuses to build its consumer when the session is longer than a request may wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.settings import Settings
from agents.worker.app import WorkerApp
from streams.policy import parse_policy


def test_a_long_session_timeout_builds_the_workers_consumer(tmp_path: Path) -> None:
    settings = Settings().but(session_timeout_s=300.0, data_dir=tmp_path)

    async def build() -> tuple[int, int]:
        worker = WorkerApp(settings, parse_policy({}))
        # Faust's own construction path (it raised ImproperlyConfigured before), not a copy
        # of its rule: a private method, named here only.
        thread = worker.app.consumer._thread  # type: ignore[attr-defined]  # the aiokafka driver's, not ConsumerT's
        consumer = thread._create_worker_consumer(worker.app.transport)
        return consumer._session_timeout_ms, consumer._client._request_timeout_ms

    session_ms, request_ms = asyncio.run(build())
    assert session_ms == 300_000
    assert request_ms > session_ms
