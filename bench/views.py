"""Live views on a long history: a worker and the admin page (`dashboard`) on an audit topic
of `CR_BENCH_VIEWS_EVENTS` events (default 1,000,000; the issue's figure is 10,000,000 with
~322,000 connectors: P3's shape, ~31 events per connector), beside a full `replay` of the
same topic in the same run (the auditor's streamed fold: the ceiling of a first fold).

For each of `dashboard` and `worker`, started twice on the same data dir with a clean stop
(SIGTERM) in between: seconds to `ready`, peak RSS (VmHWM), the longest answer to a page
probed every 20 ms while it starts (the event loop held: folding must leave it free), ERROR
lines logged; and for the page, the time to open a connector's timeline; for the worker,
its RSS once its start's heartbeat graces are applied (each reads a connector's state, after
`ready`) and its event loop's lag (/metrics). Asserts the work:
the views equal the replay (failures, recoveries, open incidents), the second start folds
no more than the events written since and repairs nothing.

The topic holds whole copies of the template (`CR_BENCH_VIEWS_EVENTS` rounded up: 10,000,000
is 10,014,000): a copy cut short leaves some connectors mid-recovery, whose retries the
worker then runs on (an incident opened, its notices sent: events the replay before it
never saw), as it should.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from agents.broker.jvm import HOME
from agents.dashboard.auth import TOKEN_COOKIE, token_digest
from agents.settings import Settings, Topics
from agents.worker.writebuffers import CHECK_EVERY_S, FLUSH_FROM_BYTES
from bench.env import env_int
from bench.memory import _template, delete_topics, peak_rss, produce_topic
from bench.replay import bootstrap

EVENTS = env_int("CR_BENCH_VIEWS_EVENTS", 1_000_000)
TOKEN = "bench-views"  # noqa: S105 - a throwaway page token of this run
READY_TIMEOUT_S = 3600
# CR_BENCH_VIEWS_RUN: which of the two to start (each twice); both by default
PROCESSES = tuple(os.environ.get("CR_BENCH_VIEWS_RUN", "dashboard,worker").split(","))
PROBE_EVERY_S = 0.02
SETTLE_TIMEOUT_S = 1800
SETTLED_POLLS = 3
PARTITIONS = Settings.from_env().partitions  # the worker's: it runs in this environment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Probe(threading.Thread):
    """GETs a page every 20 ms; keeps the longest answer (the event loop held that long)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.longest_s = 0.0
        self.answers = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:  # noqa: S310 - ours
                    response.read()
                self.answers += 1
                self.longest_s = max(self.longest_s, time.perf_counter() - began)
            except OSError:
                pass  # not serving yet
            time.sleep(PROBE_EVERY_S)


class Process:
    """One run of a CLI command that prints `ready`, its output kept."""

    def __init__(self, argv: list[str], env: dict[str, str], probe_url: str) -> None:
        self.lines: list[str] = []
        self.began = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.probe = Probe(probe_url)
        self.probe.start()
        self.ready = threading.Event()
        self.ready_s = 0.0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout or ():
            self.lines.append(line.rstrip())
            if line.strip() == "ready" and not self.ready.is_set():
                self.ready_s = time.perf_counter() - self.began
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready.wait(1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = Path(tempfile.mkstemp(prefix="bench-views-", suffix=".log")[1])
                log.write_text("\n".join(self.lines))
                raise RuntimeError(f"not ready; its output is in {log}")

    def rss_bytes(self, current: bool = False) -> int:
        """Peak RSS (VmHWM), or the current one."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB" if current else r"VmHWM:\s+(\d+) kB", status)
        return int(found.group(1)) * 1024 if found else 0

    def finish(self) -> dict[str, Any]:
        """Figures, then a clean stop (SIGTERM)."""
        self.probe.stop.set()
        rss = self.rss_bytes()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(120)
        child = _found_in(self.lines, r"of their own in [\d.]+s \(its peak RSS (\d+)")
        repair = _found_in(self.lines, r"crash repair: read in .* \(its peak RSS (\d+)")
        return {
            "ready_s": round(self.ready_s, 1),
            "peak_rss_mb": round(rss / 2**20),
            # the first fold's own process (agents/audit/child_fold.py), if one ran
            "fold_process_peak_rss_mb": int(child.group(1)) if child else None,
            # crash repair's own process (agents/worker/repair_process.py), if one ran
            "repair_process_peak_rss_mb": int(repair.group(1)) if repair else None,
            "longest_probe_ms": round(self.probe.longest_s * 1000),
            "errors": [line for line in self.lines if "[ERROR]" in line or "ERROR " in line],
            "exit": code,
            "log": self.lines,
        }


def _get(url: str) -> tuple[float, Any]:
    began = time.perf_counter()
    request = urllib.request.Request(url, headers={"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})  # noqa: S310 - ours
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - ours
        body = json.loads(response.read())
    return time.perf_counter() - began, body


def _dashboard(env: dict[str, str], policy: Path, connector: str, port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/dashboard"
    run = Process(["dashboard", "--port", str(port), "--policy", str(policy)], env, base + "/login")
    run.wait_ready()
    _, state = _get(base + "/api/state")
    timeline_s, timeline = _get(f"{base}/api/connector?id={connector}")
    figures = run.finish()
    figures.update(
        timeline_s=round(timeline_s, 3),
        timeline_events=len(timeline["events"]),
        fleet=state["fleet"],
        connectors_total=state["connectors_total"],
    )
    return figures


def _described(name: str, figures: dict[str, Any]) -> str:
    """What the start line says beside the figures every start has."""
    if name == "dashboard":
        extra = f", timeline {figures['timeline_s'] * 1000:,.0f} ms"
    else:
        extra = (
            f", repaired: {figures['repaired']}; graces applied"
            f" {figures['settled_s']:,.0f} s after ready, RSS then"
            f" {figures['settled_rss_mb']:,} MiB, {figures['flushed_rss_mb']:,} MiB once its"
            f" write buffers were flushed ({figures['flushed_s']:,.0f} s later);"
            " event loop: longest turn"
            f" {figures['loop_lag_max_ms']:,} ms late, {figures['loop_stalls']}"
            " turns over 200 ms"
        )
    for key, process in (("fold", "fold's"), ("repair", "repair's")):
        if figures[f"{key}_process_peak_rss_mb"] is not None:
            extra += f", {process} own process: {figures[f'{key}_process_peak_rss_mb']} MiB"
    return extra


def _found_in(lines: list[str], pattern: str) -> re.Match[str] | None:
    return next((found for line in lines if (found := re.search(pattern, line))), None)


def _metric(page: str, name: str) -> float:
    """A metric without labels from a /metrics page (0 if absent)."""
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _settle(port: int) -> tuple[str, float]:
    """/metrics once the worker is idle: every heartbeat grace of its start applied (the
    inputs lag at 0 and the inputs counter still for SETTLED_POLLS polls); the seconds it
    took after `ready`."""
    began = time.monotonic()
    still, last = 0, -1.0
    while time.monotonic() - began < SETTLE_TIMEOUT_S:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            page = r.read().decode()
        inputs = _metric(page, "connector_inputs_total")
        still = still + 1 if inputs == last and not _metric(page, "connector_inputs_lag") else 0
        if still >= SETTLED_POLLS:
            return page, time.monotonic() - began
        last = inputs
        time.sleep(1)
    raise RuntimeError(f"the worker was still busy {SETTLE_TIMEOUT_S} s after ready")


def _write_buffers_flushed(port: int) -> float:
    """Seconds until the state table's idle write buffers are flushed (each partition's
    below writebuffers.FLUSH_FROM_BYTES) and the check after has given the heap's freed
    pages back: the worker's memory as it stays while its fleet is quiet."""
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_TIMEOUT_S:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            held = _metric(r.read().decode(), "connector_table_write_buffer_bytes")
        if held < PARTITIONS * FLUSH_FROM_BYTES:
            time.sleep(2 * CHECK_EVERY_S)  # the give-back comes at the check after a flush
            return time.monotonic() - began
        time.sleep(1)
    raise RuntimeError(f"the worker's write buffers were not flushed {SETTLE_TIMEOUT_S} s on")


def _worker(env: dict[str, str], policy: Path, data_dir: Path) -> dict[str, Any]:
    port = _free_port()
    argv = ["worker", "--data-dir", str(data_dir), "--web-port", str(port), "--policy", str(policy)]
    run = Process(argv, env, f"http://127.0.0.1:{port}/healthz")
    run.wait_ready()
    # A worker's memory is its fleet's once the heartbeat graces of its start are applied
    # (each reads a state): 'ready' comes before them.
    metrics, settled_s = _settle(port)
    settled_rss = run.rss_bytes(current=True)
    flushed_s = _write_buffers_flushed(port)
    flushed_rss = run.rss_bytes(current=True)
    figures = run.finish()
    figures.update(
        settled_s=round(settled_s, 1),
        settled_rss_mb=round(settled_rss / 2**20),
        flushed_s=round(flushed_s, 1),
        flushed_rss_mb=round(flushed_rss / 2**20),
        loop_stalls=int(_metric(metrics, "connector_event_loop_stalls_total")),
        loop_lag_max_ms=round(_metric(metrics, "connector_event_loop_lag_max_seconds") * 1000),
    )
    totals = {"failures": 0.0, "recovered": 0.0, "open_incidents": 0.0}
    for line in metrics.splitlines():
        for name, key in (
            ("connector_failure_count_total{", "failures"),
            ("connector_recovered_total{", "recovered"),
            ("connector_open_incidents{", "open_incidents"),
        ):
            if line.startswith(name):
                totals[key] += float(line.rsplit(" ", 1)[1])
    figures["totals"] = {k: int(v) for k, v in totals.items()}
    figures["repaired"] = any("crash repair" in line for line in figures["log"])
    return figures


def _replay(env: dict[str, str], tag: str, reused: bool, events: int) -> dict[str, Any]:
    """A `replay` of the topic: seconds, peak RSS and its totals. A topic is never written
    again once made, so its replay is kept beside the jars and reused when
    CR_BENCH_VIEWS_TAG names it again (a replay of 10M events takes 13 minutes)."""
    replay_file = HOME / f"bench-views-{tag}.replay.json"
    if reused and replay_file.exists():
        replay: dict[str, Any] = json.loads(replay_file.read_text())
        print(f"  replay: {replay} (of this topic, from {replay_file})")
    else:
        replay_rss, replay_s, out = peak_rss(["replay"], env)
        found = re.search(r"failures (\d+), recovered (\d+), open incidents (\d+)", out)
        if found is None:
            raise RuntimeError(f"no totals in replay's output:\n{out}")
        replay = {
            "seconds": replay_s,
            "peak_rss_mb": round(replay_rss / 2**20),
            "totals": dict(
                zip(
                    ("failure_count", "recovered_count", "open_incidents"),
                    map(int, found.groups()),
                    strict=True,
                )
            ),
        }
        replay_file.parent.mkdir(parents=True, exist_ok=True)
        replay_file.write_text(json.dumps(replay))
        print(
            f"  replay: {replay_s:,.1f} s, peak RSS {replay_rss / 2**20:,.0f} MiB, "
            f"{events / replay_s:,.0f} events/s"
        )
    return replay


def main(_repeats: int) -> dict[str, Any]:
    # CR_BENCH_VIEWS_TAG: the topics of an earlier run that was cut short (10M events take
    # minutes to write); else new ones
    reused = os.environ.get("CR_BENCH_VIEWS_TAG")
    tag = reused or uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=bootstrap(),
        app_id=f"bench-views-{tag}",
        topics=Topics().with_prefix(f"bench-views-{tag}."),
    )
    template = _template()
    events = -(-EVENTS // len(template)) * len(template)
    if not reused:
        began = time.perf_counter()
        asyncio.run(produce_topic(settings, template, events))
        print(f"  wrote {events:,} audit events in {time.perf_counter() - began:,.0f} s")
    folder = Path(tempfile.mkdtemp(prefix="bench-views-"))
    policy = folder / "policy.yaml"
    policy.write_text(
        "defaults: {heartbeat_timeout_s: 86400}\n"
        f"dashboard: {{users: {{bench: {{token_sha256: {token_digest(TOKEN)}}}}}}}\n"
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CR_TOPIC_PREFIX": f"bench-views-{tag}.",
        "CR_APP_ID": settings.app_id,
        "CR_DATA_DIR": str(folder / "dashboard-data"),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        replay = _replay(env, tag, bool(reused), events)
        replayed = replay["totals"]
        connector = "BENCH-00000-0"
        page_port = _free_port()  # one port for both starts, as a user runs it
        rows = {}
        for name in PROCESSES:
            for start in ("first", "second"):
                if name == "dashboard":
                    figures = _dashboard(env, policy, connector, page_port)
                else:
                    figures = _worker(env, policy, folder / "worker-data")
                rows[f"{name} {start}"] = figures
                (folder / f"{name}-{start}.log").write_text("\n".join(figures["log"]) + "\n")
                for line in figures["errors"][:3]:
                    print(f"    {line[:300]}")
                extra = _described(name, figures)
                print(
                    f"  {name:9} {start:6} start: ready {figures['ready_s']:7,.1f} s, "
                    f"peak RSS {figures['peak_rss_mb']:5,} MiB, longest page answer "
                    f"{figures['longest_probe_ms']:5,} ms, {len(figures['errors'])} ERROR lines"
                    f"{extra}, exit {figures['exit']}"
                )
        expected = {
            "failures": replayed["failure_count"],
            "recovered": replayed["recovered_count"],
            "open_incidents": replayed["open_incidents"],
        }
        for start in ("first", "second"):
            if "worker" in PROCESSES:
                shown = rows[f"worker {start}"]["totals"]
                if shown != expected:
                    raise RuntimeError(
                        f"the worker's views at its {start} start {shown} are not the"
                        f" replay's {expected}"
                    )
            if "dashboard" in PROCESSES:
                fleet = rows[f"dashboard {start}"]["fleet"]
                if fleet["open_incidents"] != expected["open_incidents"]:
                    raise RuntimeError(
                        f"the page's views at its {start} start {fleet} are not the"
                        f" replay's {expected}"
                    )
        if "worker" in PROCESSES and rows["worker second"]["repaired"]:
            raise RuntimeError("the second start of the worker repaired the table again")
        if "worker" in PROCESSES and not rows["worker first"]["repaired"]:
            # The group and its changelog are the topic's (CR_APP_ID): an earlier run on
            # the same CR_BENCH_VIEWS_TAG left its table there, restored at this start.
            if not reused:
                raise RuntimeError("the first start of the worker repaired nothing")
            print(
                "  (the worker's first start restored the table an earlier run on this topic"
                " left in its changelog: not a first start; write a new topic for one)"
            )
        for row in rows.values():
            del row["log"]
        print(f"  their logs: {folder}/")
        return {
            "events": events,
            "replay": replay,
            "runs": rows,
        }
    finally:
        if not reused:
            asyncio.run(delete_topics(settings))
