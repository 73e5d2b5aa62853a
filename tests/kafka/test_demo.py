"""The README's main command runs to a correct, verified summary."""

from __future__ import annotations

import os
import re
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
    actions = [line for line in out.splitlines() if line.startswith("admin ")]
    assert actions  # SAP-AR's incident is acknowledged and recovered by the demo's admin
    assert len(actions) == len(set(actions)), "\n".join(actions)  # each printed once


def test_the_demo_prints_commands_that_show_its_data(ns: Namespace) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "demo"],
        env={**ns.env(), "CR_DEMO_SECONDS": "20", "CR_TOPIC_PREFIX": ""},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=ns.tmp,
    )
    assert "verify: " in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    commands = [
        line.strip()
        for line in result.stdout.splitlines()
        if re.match(r"  ([A-Z_]+=\S+ )+connector-recovery ", line)
    ]
    assert [command.split(" connector-recovery ")[1] for command in commands] == [
        "report --format html --out demo-report.html",
        "verify",
        "replay --connector SAP-AR",
    ]
    # as a user would paste them: a shell, the CLI on PATH, from another folder
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    outputs = []
    for command in commands:
        ran = subprocess.run(
            ["bash", "-c", command],
            env={"PATH": path, "HOME": str(ns.tmp)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ns.tmp,
        )
        assert ran.returncode == 0, f"{command}\n{ran.stdout}{ran.stderr}"
        outputs.append(ran.stdout)
    assert "<svg" in (ns.tmp / "demo-report.html").read_text()
    assert ": clean" in outputs[1]
    assert "replayed " in outputs[2]
    assert "failures 1," in outputs[2]  # SAP-AR failed once (the stubborn fault)
