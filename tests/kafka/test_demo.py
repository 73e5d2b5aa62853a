"""The README's main command runs to a correct, verified summary."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka.harness import Namespace, wait_for

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


def demo_in_a_terminal(ns: Namespace, seconds: int) -> str:
    """The demo in a real terminal (a private tmux server, 250 columns): what a person sees
    at the end, scrollback included, once it has exited."""
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing: scripts/test.sh installs Debian's tmux")
        pytest.skip("tmux not installed (apt-get install tmux)")
    server = [tmux, "-L", f"cr-demo-{ns.tag}"]
    done = ns.tmp / "demo.exit"
    env = {**ns.env(), "CR_DEMO_SECONDS": str(seconds), "CR_TOPIC_PREFIX": "", "TERM": "xterm"}
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    script = (
        f"cd {shlex.quote(str(ns.tmp))} && env {exports} {shlex.quote(sys.executable)} "
        f"-m agents.cli demo; echo $? > {shlex.quote(str(done))}; sleep 600"
    )
    subprocess.run(
        [*server, "new-session", "-d", "-x", "250", "-y", "50", script], check=True, timeout=30
    )
    try:
        wait_for(done.exists, 400, "the demo to end", interval_s=1)
        screen = subprocess.run(
            [*server, "capture-pane", "-p", "-J", "-S", "-"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    finally:
        subprocess.run([*server, "kill-server"], check=False, timeout=30)
    assert done.read_text().strip() == "0", screen[-3000:]
    return screen


def test_the_demo_ends_with_commands_that_show_its_data(ns: Namespace) -> None:
    screen = demo_in_a_terminal(ns, seconds=30)
    actions = [line.strip() for line in screen.splitlines() if line.strip().startswith("admin ")]
    assert actions, screen[-3000:]  # SAP-AR's incident: acknowledged, recovered by the admin
    assert len(actions) == len(set(actions)), "\n".join(actions)  # each on the screen once
    commands = [
        line.strip()
        for line in screen.splitlines()
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
