"""The README's main command runs to a correct, verified summary."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

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
    # the non-retryable auth failure is left for the newcomer, who is told how to act on it
    assert "SFDC-CRM" not in manual
    assert "Left open for you: incident SFDC-CRM:1: SFDC-CRM (tenant acme)" in out
    assert "run `connector-recovery demo --keep`" in out
    assert "connector.flapping.started=" in out  # HUBSPOT-CRM
    assert "notification.failed=" in out  # initech's webhook is down ...
    assert "incident.escalated=" in out  # ... so the Platform Admin hears about it
    assert "connector.recovery.completed=" in out
    # The ERP database went down and came back: one outage in the demo's audit log (the
    # events line counts it), named on the closing screen, paged once
    assert re.search(r"\boutage\.opened=1\b", out), out[-3000:]
    assert re.search(r"\boutage\.resolved=1\b", out), out[-3000:]
    assert "outages: 1 opened, 1 resolved, 0 open" in out
    named = next(line for line in out.splitlines() if "outage:dependency:erp-db:1: " in line)
    assert "failing for one cause (dependency:erp-db: " in named, named
    assert "the Platform Admin was paged once when it opened, not once per connector" in out
    if shutil.which("prometheus-alertmanager"):  # the Platform Admin paged through it
        assert "pages the Platform Admin" in out
        heard = next(line for line in out.splitlines() if line.startswith("webhooks received:"))
        assert "'/alertmanager':" in heard, heard


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
    assert [
        command.split(" connector-recovery ")[1].split(" --policy ")[0] for command in commands
    ] == [
        "report --format html --out demo-report.html",
        "verify",
        "replay --connector SAP-AR",
        "dashboard",  # serves until Ctrl-C: test_demo_keep... runs the page
    ]
    commands = commands[:3]
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
    assert "data-chart=" in (ns.tmp / "demo-report.html").read_text()
    assert ": clean" in outputs[1]
    assert "replayed " in outputs[2]
    assert "failures 1," in outputs[2]  # SAP-AR failed once (the stubborn fault)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def test_demo_keep_stays_up_on_cr_web_port_with_an_incident_to_act_on(ns: Namespace) -> None:
    """`demo --keep` with CR_WEB_PORT: after the closing screen the worker and its admin page
    stay up on that port with the incident left open; the closing screen's commands, pasted
    into a shell, close it; SIGTERM then stops everything."""
    port = free_port()
    out = ns.tmp / "demo-keep.out"
    env = {**ns.env(), "CR_DEMO_SECONDS": "30", "CR_TOPIC_PREFIX": "", "CR_WEB_PORT": str(port)}
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "demo", "--keep"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ns.tmp,
        )
    try:
        wait_for(
            lambda: "stay up until Ctrl-C" in out.read_text() or demo.poll() is not None,
            400,
            "the closing screen of demo --keep",
            interval_s=1,
        )
        screen = out.read_text()
        assert demo.poll() is None, screen[-3000:]
        assert f"Admin page: http://127.0.0.1:{port}/dashboard/ (token: demo)" in screen
        left = [i for i in status(port)["open_incidents"] if i["connector_id"] == "SFDC-CRM"]
        assert len(left) == 1, status(port)["open_incidents"]
        incident = left[0]["incident_id"]
        assert f"Left open for you: incident {incident}: SFDC-CRM" in screen
        signed_in = urllib.request.Request(
            f"http://127.0.0.1:{port}/dashboard/", headers={"Authorization": "Bearer demo"}
        )
        with urllib.request.urlopen(signed_in, timeout=5) as page:  # noqa: S310 - as above
            body = page.read().decode()
        assert "demo-admin · admin · every tenant" in body  # the page outlives the live view
        assert incident in body
        commands = [
            line.strip()
            for line in screen.splitlines()
            if re.match(r"  ([A-Z_]+=\S+ )+connector-recovery (ack|recover) ", line)
        ]
        assert [c.split(" connector-recovery ")[1] for c in commands] == [
            f"ack {incident} --actor demo-admin",
            "recover SFDC-CRM --actor demo-admin",
        ]
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        for command in commands:
            ran = subprocess.run(
                ["bash", "-c", command],
                env={"PATH": path, "HOME": str(ns.tmp)},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert ran.returncode == 0, f"{command}\n{ran.stdout}{ran.stderr}"
            assert ran.stdout.startswith("accepted: "), ran.stdout

        def closed() -> bool:
            now = status(port)
            sfdc = next(c for c in now["connectors"] if c["connector_id"] == "SFDC-CRM")
            return sfdc["phase"] == "OK" and not now["open_incidents"]

        wait_for(closed, 60, "SFDC-CRM recovered by the newcomer, its incident closed")
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(90) == 0, out.read_text()[-3000:]
        assert "stopping the worker, the fleet and the admin page" in out.read_text()
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0  # the worker is gone
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
