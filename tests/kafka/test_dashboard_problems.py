"""The admin page says what keeps it from working: pointed at a topic prefix with no audit
topic, its log and its page say so in one line within seconds, naming the topic and
CR_TOPIC_PREFIX; it keeps looking, and follows the topic once a worker creates it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agents.broker.topics import ensure_topics
from agents.dashboard.auth import TOKEN_COOKIE, token_digest
from tests.kafka.harness import Namespace, free_port, run, wait_for

pytestmark = pytest.mark.kafka

TOKEN = "problems-token"  # noqa: S105 - a test's throwaway page token


def state(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/dashboard/api/state",
        headers={"Cookie": f"{TOKEN_COOKIE}={TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the test's own page
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_a_page_with_no_audit_topic_says_so_and_follows_it_once_it_exists(
    ns: Namespace, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'dashboard: {{users: {{ann: {{token_sha256: "{token_digest(TOKEN)}"}}}}}}\n')
    port = free_port()
    lines: list[str] = []
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "dashboard",
            "--port",
            str(port),
            "--policy",
            str(policy),
        ],
        env=ns.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
    try:
        wait_for(lambda: any("admin page:" in line for line in lines), 30, "the page's URL")
        topic = ns.topics.audit
        said = wait_for(
            lambda: next((line for line in lines if "no audit topic" in line), None),
            10,
            "the log to say there is no audit topic",
        )
        assert repr(topic) in said
        assert "CR_TOPIC_PREFIX" in said
        shown = state(port)
        assert shown["caught_up"] is False
        assert repr(topic) in shown["problem"]
        assert "CR_TOPIC_PREFIX" in shown["problem"]
        page = urllib.request.Request(
            f"http://127.0.0.1:{port}/dashboard/", headers={"Cookie": f"{TOKEN_COOKIE}={TOKEN}"}
        )
        with urllib.request.urlopen(page, timeout=5) as response:  # noqa: S310 - the test's own page
            assert "no audit topic" in response.read().decode()
        run(ensure_topics(ns.settings()))
        wait_for(lambda: "ready\n" in lines, 30, "the page to follow the topic")
        assert state(port)["problem"] is None
    finally:
        process.terminate()
        assert process.wait(30) == 0
