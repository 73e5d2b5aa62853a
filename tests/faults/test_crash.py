"""R1: SIGKILL the worker at random points while a fleet pings; nothing lost, nothing
conflicting, and the replayed MTTR equals the reference fold's exactly."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.figures import FULL, record, reference_figures
from tests.kafka.fleet import Fleet
from tests.kafka.harness import Namespace, Worker, fleet_policy, wait_caught_up, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

PINGS, CONNECTORS, KILLS = (100_000, 100, 12) if FULL else (20_000, 50, 10)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return fleet_policy(tmp_path, heartbeat_s=60)


@pytest.fixture
def crashy(ns: Namespace, policy_file: Path) -> Iterator[Worker]:
    worker = Worker(ns, "crashy", policy=policy_file)
    yield worker
    worker.kill()


def test_sigkills_at_random_points_lose_nothing(
    ns: Namespace, policy_file: Path, crashy: Worker
) -> None:
    rng = random.Random(20261129)  # noqa: S311 - a reproducible schedule, not a secret
    connectors = [f"SAP-{i:03d}" for i in range(CONNECTORS)]
    rounds = PINGS // CONNECTORS
    failing = {
        c: set(range(start, start + rng.randrange(5, 40)))
        for c in rng.sample(connectors, CONNECTORS // 3)
        for start in [rng.randrange(5, rounds - 50)]
    }
    crashy.start()
    fleet = Fleet(
        ns.bootstrap, ns.topics.health, connectors, failing=failing, interval_s=0.1
    ).start()
    kill_points = sorted(rng.sample(range(PINGS // 20, PINGS * 9 // 10), KILLS))
    for kill, point in enumerate(kill_points):
        wait_for(lambda p=point: fleet.sent >= p, 600, "pings to flow")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
        crashy.kill()
        if kill % 2:  # lose the local store too: state comes back from the changelog
            shutil.rmtree(crashy.data_dir, ignore_errors=True)
        crashy.start(ready_timeout_s=180)
    wait_for(lambda: fleet.sent >= PINGS, 900, "the fleet to send every ping")
    sent = fleet.stop()
    wait_caught_up(ns, timeout_s=900)
    figures = reference_figures(ns, policy_file)
    report = ns.tmp / "report.json"
    built = ns.cli("report", "--quiet", "--out", str(report), timeout_s=300)
    assert built.returncode == 0, built.stderr
    replayed = json.loads(report.read_text())["totals"]
    record(
        "R1-crash",
        {
            "pings": sent,
            "connectors": CONNECTORS,
            "kills": KILLS,
            "wiped_stores": KILLS // 2,
            "reference_events": figures["reference_events"],
            "lost": figures["lost"],
            "conflicting_duplicates": figures["conflicting_duplicates"],
            "benign_duplicates": figures["benign_duplicates"],
            "extra": figures["extra"],
            "failures": replayed["failure_count"],
            "mttr_mean_s": replayed["mttr_seconds"]["mean"],
            "mttr_equal_to_reference": replayed == figures["reference_totals"],
        },
    )
    assert figures["reference_events"] > CONNECTORS // 3
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
    assert replayed == figures["reference_totals"]
