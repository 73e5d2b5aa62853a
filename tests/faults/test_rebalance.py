"""R3: grow 1 → 3 workers and shrink back to 1 while pings flow: state stays continuous
(no connector detected twice for one failure window, no sequence reset); 0 lost; no page
for a connector that never failed.

Full size: 2,000 connectors with a backlog of 400,000 pings (a third of the connectors
with one failure window each in it) waiting when the first worker starts: the first cycle
begins while it is being drained. CI: 24 connectors pinging live."""

from __future__ import annotations

import asyncio
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pytest

from agents.broker.topics import ensure_topics
from streams.models import AuditEvent, EventType
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
    read_audit,
    routed,
    wait_for,
    wind_down,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, TIMEOUT]

CYCLES = 3 if FULL else 1
CONNECTORS = FLEET_CONNECTORS if FULL else 24
INTERVAL_S = 0.5 if FULL else 0.2  # the live fleet's: 4,000 pings/s at full size
HEARTBEAT_MIN_S = 120
HOLD_SESSION_S = 80  # the first worker's (Faust: at most its 90 s request timeout), while held


def detections_and_resets(events: list[AuditEvent]) -> tuple[dict[str, int], int]:
    """`failure.detected` events per connector, and the connectors whose sequence numbers
    are not 1, 2, 3, ... without a gap (a chain restarted or forked)."""
    sequences: dict[str, set[int]] = {}
    detected: dict[str, int] = {}
    for event in events:
        sequences.setdefault(event.connector_id, set()).add(event.sequence)
        if event.type is EventType.FAILURE_DETECTED:
            detected[event.connector_id] = detected.get(event.connector_id, 0) + 1
    resets = sum(int(sorted(s) != list(range(1, len(s) + 1))) for s in sequences.values())
    return detected, resets


def test_growing_to_three_workers_and_back_keeps_state_continuous(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    began = time.monotonic()
    connectors = [f"ERP-{i:04d}" for i in range(CONNECTORS)]
    # One failure window per failing connector, spread over the whole live run.
    windows = {c: set(range(10 + 9 * i, 16 + 9 * i)) for i, c in enumerate(connectors[:24:2])}
    rng = random.Random(3)  # noqa: S311 - a reproducible schedule, not a secret
    history = {
        c: set(range(start, start + 6))
        for c in rng.sample(connectors[24:], CONNECTORS // 3 if FULL else 0)
        for start in [rng.randrange(0, BACKLOG_ROUNDS - 10)]
    }
    heartbeat_s = HEARTBEAT_MIN_S
    backlog = None
    if FULL:
        asyncio.run(ensure_topics(ns.settings()))
        backlog = produce_backlog(
            ns.bootstrap,
            ns.topics.health,
            connectors,
            BACKLOG_ROUNDS,
            interval_s=INTERVAL_S,
            failing=history,
        )
        # With several workers, a worker's clock sees only its own router's front
        # (docs/worker.md): a connector routed by a router still in the backlog could be
        # ticked at the present. A timeout above the backlog's whole stamped span keeps that
        # known limit out of this test, whose subject is the rebalance.
        span_s = (time.time_ns() // 1_000_000 - backlog.first_at) / 1000
        heartbeat_s = max(HEARTBEAT_MIN_S, math.ceil(span_s + HEARTBEAT_MIN_S))
    policy = fleet_policy(tmp_path, heartbeat_s=heartbeat_s)
    # A session outlasting the hold below (the first cycle's), so its router stays a member.
    session = {"CR_SESSION_TIMEOUT_S": str(HOLD_SESSION_S)} if backlog else {}
    first = Worker(ns, "w1", policy=policy, env=session).start(ready_timeout_s=180)
    workers.append(first)
    fleet = Fleet(
        ns.bootstrap, ns.topics.health, connectors, failing=windows, interval_s=INTERVAL_S
    ).start()
    routed_at_growth = []
    for cycle in range(CYCLES):
        base = 60 * cycle
        # With a backlog, the first cycle at once: it is still being drained.
        start = 0 if backlog and cycle == 0 else 10
        wait_for(lambda b=base + start: fleet.rounds >= b, 120, "pings to flow")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
        extra = [Worker(ns, f"w{2 + k}-{cycle}", policy=policy) for k in range(2)]
        workers.extend(extra)
        # With a backlog, the first worker's router is held (SIGSTOP) while the two start:
        # the routers' group rebalances when it continues, with the rest of the backlog
        # still to drain, however fast this machine drains and however slowly it starts
        # workers. Without one, the growth lands among live pings.
        with first.router_frozen() if backlog and cycle == 0 else nullcontext():
            routed_at_growth.append(routed(ns))
            with ThreadPoolExecutor(2) as starting:  # both join in one rebalance, or nearly
                list(starting.map(Worker.start, extra))
        wait_for(lambda b=base: fleet.rounds >= b + 35, 180, "pings among three workers")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
        for worker in extra:
            assert worker.stop() == 0  # a clean leave: its partitions move back
    last_round = max(max(w) for w in windows.values())
    wait_for(lambda: fleet.rounds >= last_round + 20, 300, "every failure window to pass")
    try:
        sent = wind_down(ns, first, fleet) + (backlog.pings if backlog else 0)
    finally:
        fleet.stop()
    failed = windows | (history if backlog else {})
    detected, resets = detections_and_resets(read_audit(ns.bootstrap, ns.topics.audit, 0, 5))
    figures = reference_figures(ns, policy, processed_inputs(ns))
    pages = false_pages(ns, set(failed))
    record(
        "R3-rebalance",
        {
            "pings": sent,
            "connectors": CONNECTORS,
            "backlog": backlog.pings if backlog else 0,
            "heartbeat_s": heartbeat_s,
            "cycles": CYCLES,
            "workers_max": 3,
            "routed_at_growth": routed_at_growth,
            "reference_events": figures["reference_events"],
            "lost": figures["lost"],
            "conflicting_duplicates": figures["conflicting_duplicates"],
            "extra": figures["extra"],
            "sequence_resets": resets,
            "redetections": sum(n - 1 for n in detected.values() if n > 1),
            **pages,
            "wall_s": round(time.monotonic() - began),
        },
    )
    if backlog:
        left = backlog.pings - routed_at_growth[0]
        assert left >= backlog.pings // 4, f"{left} pings of the backlog left: no test"
    assert detected == dict.fromkeys(failed, 1)
    assert resets == 0
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
    assert (pages["false_pages"], pages["false_notifications"]) == (0, 0), pages
