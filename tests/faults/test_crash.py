"""R1: SIGKILL the worker at random points while a fleet pings; nothing lost, nothing
conflicting, no page for a connector that never failed, and the replayed MTTR equals the
reference fold's exactly.

Full size: 2,000 connectors with a backlog of 400,000 pings (their failure windows in it)
waiting when the worker starts, and every kill lands while that backlog is being drained;
the fleet keeps pinging live meanwhile. CI: 50 connectors pinging live, no backlog."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.broker.topics import ensure_topics
from tests.faults.figures import (
    BACKLOG_ROUNDS,
    FLEET_CONNECTORS,
    FULL,
    TIMEOUT,
    record,
    reference_figures,
)
from tests.kafka.fleet import Fleet, produce_backlog
from tests.kafka.harness import (
    Namespace,
    Worker,
    false_pages,
    fleet_policy,
    processed_inputs,
    routed,
    wait_for,
    wind_down,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, TIMEOUT]

CONNECTORS, KILLS = (FLEET_CONNECTORS, 12) if FULL else (50, 10)
LIVE_PINGS = 20_000  # CI: the live fleet's whole stream, pinging every 100 ms
HEARTBEAT_S = 60  # far above any gap between a connector's stamped pings (asserted)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return fleet_policy(tmp_path, heartbeat_s=HEARTBEAT_S)


@pytest.fixture
def crashy(ns: Namespace, policy_file: Path) -> Iterator[Worker]:
    worker = Worker(ns, "crashy", policy=policy_file)
    yield worker
    worker.kill()


def replayed_report(ns: Namespace) -> tuple[dict[str, Any], Counter[str], int]:
    """The `report` command's totals, its verification findings by kind, its exit code."""
    path = ns.tmp / "report.json"
    built = ns.cli("report", "--quiet", "--out", str(path), timeout_s=300)
    assert path.exists(), built.stderr
    report = json.loads(path.read_text())
    findings = Counter(f["kind"] for f in report["verification"]["findings"])
    return report["totals"], findings, built.returncode


def test_sigkills_at_random_points_lose_nothing(
    ns: Namespace, policy_file: Path, crashy: Worker
) -> None:
    began = time.monotonic()
    rng = random.Random(20261129)  # noqa: S311 - a reproducible schedule, not a secret
    connectors = [f"SAP-{i:04d}" for i in range(CONNECTORS)]
    rounds = BACKLOG_ROUNDS if FULL else LIVE_PINGS // CONNECTORS
    failing = {
        c: set(range(start, start + rng.randrange(5, 40)))
        for c in rng.sample(connectors, CONNECTORS // 3)
        for start in [rng.randrange(5, rounds - 50)]
    }
    backlog = None
    if FULL:  # the failures are history the worker finds waiting; the live fleet is healthy
        asyncio.run(ensure_topics(ns.settings()))
        backlog = produce_backlog(
            ns.bootstrap, ns.topics.health, connectors, rounds, failing=failing
        )
        fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, interval_s=1.0).start()
        stream = backlog.pings
        crashy.start(ready_timeout_s=180)
    else:  # the worker first, then its fleet, as ever
        crashy.start(ready_timeout_s=180)
        fleet = Fleet(
            ns.bootstrap, ns.topics.health, connectors, failing=failing, interval_s=0.1
        ).start()
        stream = LIVE_PINGS
    # Kills at random points of the stream: in the full size, of the backlog as the worker
    # routes it, so each lands while it is being drained (checked below); in CI, of the
    # live pings as the fleet sends them.
    kill_points = sorted(rng.sample(range(stream // 20, stream * 9 // 10), KILLS))
    progress: Callable[[], int] = (lambda: routed(ns)) if backlog else (lambda: fleet.sent)
    poll_s = 0.25 if backlog else 0.1  # asking the broker costs more than reading a counter
    routed_at_kills = []
    try:
        for kill, point in enumerate(kill_points):
            wait_for(lambda p=point: progress() >= p, 600, "pings to flow", poll_s)  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
            crashy.kill()
            if backlog:
                routed_at_kills.append(routed(ns))
            if kill % 2:  # lose the local store too: state comes back from the changelog
                shutil.rmtree(crashy.data_dir, ignore_errors=True)
            crashy.start(ready_timeout_s=180)
        if not FULL:
            wait_for(lambda: fleet.sent >= LIVE_PINGS, 900, "the fleet to send every ping")
        sent = wind_down(ns, crashy, fleet, timeout_s=900) + (backlog.pings if backlog else 0)
    finally:
        fleet.stop()
    assert fleet.first_at is not None
    # The longest silence of a connector in the stamped pings: the backlog's last round to
    # the live fleet's first (the time it took to produce the backlog), or the live interval.
    largest_gap_s = backlog.longest_silence_ms(fleet.first_at) / 1000 if backlog else 0.1
    figures = reference_figures(ns, policy_file, processed_inputs(ns))
    pages = false_pages(ns, set(failing))
    replayed, findings, report_exit = replayed_report(ns)
    drained_at_kill = [n for n in routed_at_kills if n >= stream]
    record(
        "R1-crash",
        {
            "pings": sent,
            "connectors": CONNECTORS,
            "backlog": backlog.pings if backlog else 0,
            "backlog_produce_s": round(backlog.produce_s, 1) if backlog else None,
            "kills": KILLS,
            "wiped_stores": KILLS // 2,
            "kills_after_the_backlog": len(drained_at_kill) if backlog else None,
            "routed_at_kills": routed_at_kills,
            "largest_stamped_gap_s": round(largest_gap_s, 1),
            "reference_events": figures["reference_events"],
            "lost": figures["lost"],
            "conflicting_duplicates": figures["conflicting_duplicates"],
            "benign_duplicates": figures["benign_duplicates"],
            "extra": figures["extra"],
            "failures": replayed["failure_count"],
            **pages,
            "verify_findings": dict(findings),
            "mttr_mean_s": replayed["mttr_seconds"]["mean"],
            "mttr_equal_to_reference": replayed == figures["reference_totals"],
            "wall_s": round(time.monotonic() - began),
        },
    )
    assert largest_gap_s < HEARTBEAT_S / 2, "the heartbeat timeout is no longer above the gaps"
    if backlog:
        assert drained_at_kill == [], "a kill landed after the backlog was drained: no test"
    assert figures["reference_events"] > CONNECTORS // 3
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
    assert report_exit == 0, f"report exited {report_exit}: findings {findings}"
    assert (pages["false_pages"], pages["false_notifications"]) == (0, 0), pages
    assert replayed["failure_count"] == len(failing)
    assert replayed == figures["reference_totals"]
