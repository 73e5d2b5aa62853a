"""R3: grow 1 → 3 workers and shrink back to 1 while pings flow: state stays continuous
(no connector detected twice for one failure window, no sequence reset); 0 lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.models import EventType
from tests.faults.figures import FULL, record, reference_figures
from tests.kafka.fleet import Fleet
from tests.kafka.harness import (
    Namespace,
    Worker,
    fleet_policy,
    read_audit,
    wait_caught_up,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

CYCLES = 3 if FULL else 1


def test_growing_to_three_workers_and_back_keeps_state_continuous(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    policy = fleet_policy(tmp_path, heartbeat_s=120)
    first = Worker(ns, "w1", policy=policy).start()
    workers.append(first)
    connectors = [f"ERP-{i:02d}" for i in range(24)]
    # One failure window per failing connector, spread over the whole run.
    windows = {c: set(range(10 + 9 * i, 16 + 9 * i)) for i, c in enumerate(connectors[::2])}
    fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, failing=windows).start()
    for cycle in range(CYCLES):
        base = 60 * cycle
        wait_for(lambda b=base: fleet.rounds >= b + 10, 120, "pings to flow")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
        extra = [Worker(ns, f"w{2 + k}-{cycle}", policy=policy).start() for k in range(2)]
        workers.extend(extra)
        wait_for(lambda b=base: fleet.rounds >= b + 35, 180, "pings among three workers")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
        for worker in extra:
            assert worker.stop() == 0  # a clean leave: its partitions move back
    last_round = max(max(w) for w in windows.values())
    wait_for(lambda: fleet.rounds >= last_round + 20, 300, "every failure window to pass")
    sent = fleet.stop()
    wait_caught_up(ns, timeout_s=300)
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    detected: dict[str, int] = {}
    resets = 0
    for connector in connectors:
        mine = sorted({e.sequence for e in events if e.connector_id == connector})
        resets += int(mine != list(range(1, len(mine) + 1)))
    for event in events:
        if event.type is EventType.FAILURE_DETECTED:
            detected[event.connector_id] = detected.get(event.connector_id, 0) + 1
    figures = reference_figures(ns, policy)
    record(
        "R3-rebalance",
        {
            "pings": sent,
            "cycles": CYCLES,
            "workers_max": 3,
            "reference_events": figures["reference_events"],
            "lost": figures["lost"],
            "conflicting_duplicates": figures["conflicting_duplicates"],
            "extra": figures["extra"],
            "sequence_resets": resets,
            "redetections": sum(n - 1 for n in detected.values() if n > 1),
        },
    )
    assert detected == dict.fromkeys(windows, 1)
    assert resets == 0
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
