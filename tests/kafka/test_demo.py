"""The README's main command runs to a correct, verified summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka.harness import Namespace

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kafka


def test_the_demo_ends_with_a_verified_summary(ns: Namespace) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "demo"],
        env={**ns.env(), "CR_DEMO_SECONDS": "45", "CR_TOPIC_PREFIX": ""},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=ns.tmp,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "verify: " in out
    assert "no compliance findings" in out
    manual = next(line for line in out.splitlines() if line.startswith("manual recoveries:"))
    assert "SAP-AR" in manual  # retries exhausted, then recovered by the Platform Admin
    assert "SFDC-CRM" in manual  # non-retryable auth failure
    assert "connector.flapping.started=" in out  # HUBSPOT-CRM
    assert "notification.failed=" in out  # initech's webhook is down ...
    assert "incident.escalated=" in out  # ... so the Platform Admin hears about it
    assert "connector.recovery.completed=" in out
