"""What a fault test measured: printed, and kept for RELIABILITY.md under .local/reliability/.

`CR_FAULTS_FULL=1` runs the full-size versions (RELIABILITY.md gives the command); CI runs
shorter but real ones.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agents.policyfile import load_policy
from streams.models import AuditEvent
from streams.projections import Projection, totals
from tests.kafka.harness import Namespace, compare_with_reference, reference_fold

FULL = os.environ.get("CR_FAULTS_FULL") == "1"
# The full suite runs at a fleet's scale (issue 21, item 5): this many connectors, and a
# backlog of this many of their pings waiting on the health topic when the worker starts,
# stamped as the fleet stamped them (tests/kafka/fleet.py, `produce_backlog`). CI runs each
# test at its own, smaller size, without the backlog.
FLEET_CONNECTORS = 2_000
BACKLOG_PINGS = 400_000
BACKLOG_ROUNDS = BACKLOG_PINGS // FLEET_CONNECTORS  # one ping a second: 200 s of history
# The full sizes run for minutes each; CI's keep the project's default bound (pyproject).
TIMEOUT = pytest.mark.timeout(1800 if FULL else 300)
RESULTS = Path(__file__).resolve().parents[2] / ".local" / "reliability"


def record(test: str, figures: dict[str, Any]) -> None:
    print(f"{test}: " + " ".join(f"{k}={v}" for k, v in figures.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamped = {"test": test, "full": FULL, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **figures}
    (RESULTS / f"{test}.json").write_text(json.dumps(stamped, indent=2) + "\n")


def reference_figures(
    ns: Namespace, policy_path: Path, processed: Mapping[int, int] | None = None
) -> dict[str, Any]:
    """Lost / duplicated against the reference fold (of the inputs before `processed`, for
    a stopped worker), and the reference's MTTR totals."""
    policy = load_policy(policy_path)
    figures: dict[str, Any] = compare_with_reference(ns, policy, processed)
    expected: dict[str, list[AuditEvent]] = reference_fold(ns, policy, processed)
    projection = Projection()
    for events in expected.values():
        projection.apply_all(events)
    figures["reference_totals"] = totals(projection.episodes.values()).as_dict()
    return figures
