"""P4: inputs/s through `decide` (+ the `evolve` it folds) in one process, and audit
events/s through the projections and the verify fold.

Baseline, same run, alternating: a loop that does the least a decider must do per input —
read a dict entry, compare the status and the timestamp, write the entry back. The ratio
says what the core's rules and immutability cost over that floor.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from streams.decider import decide
from streams.models import AuditEvent, HealthPing, HealthStatus, Tick
from streams.policy import parse_policy
from streams.projections import Projection, group_totals
from streams.state import ConnectorState
from streams.verify import Verifier

T0 = 1_759_148_400_000
CONNECTORS = 1_000
INPUTS = 200_000


def workload(seed: int = 7) -> list[HealthPing | Tick]:
    """A realistic mix: each connector checks once a simulated second; a healthy one starts
    failing with p=0.0015 per check and a failing one recovers with p=0.05 per check, so
    about 3% of connectors are failing at any time; the clock ticks 10% of them a second."""
    rng = random.Random(seed)
    out: list[HealthPing | Tick] = []
    failing = [False] * CONNECTORS
    now = T0
    while len(out) < INPUTS:
        now += 1000
        for index in range(CONNECTORS):
            if failing[index]:
                failing[index] = rng.random() > 0.05
            else:
                failing[index] = rng.random() < 0.0015
            healthy = not failing[index]
            out.append(
                HealthPing(
                    connector_id=f"CONN-{index:04d}",
                    status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
                    failure=None if healthy else "timeout",
                    checked_at=now,
                )
            )
        out.extend(Tick(connector_id=f"CONN-{i:04d}", now=now) for i in range(0, CONNECTORS, 10))
    return out[:INPUTS]


def run_core(inputs: list[HealthPing | Tick]) -> tuple[float, list[AuditEvent]]:
    policy = parse_policy({"defaults": {"flap_window": 21}})
    states: dict[str, ConnectorState] = {}
    events: list[AuditEvent] = []
    started = time.perf_counter()
    for message in inputs:
        key = message.connector_id
        state = states.get(key) or ConnectorState.new(key)
        decision = decide(state, message, policy)
        if decision.state is not state:
            states[key] = decision.state
        if decision.events:
            events.extend(decision.events)
    return time.perf_counter() - started, events


def run_baseline(inputs: list[HealthPing | Tick]) -> float:
    table: dict[str, tuple[bool, int]] = {}
    started = time.perf_counter()
    for message in inputs:
        key = message.connector_id
        previous = table.get(key)
        if isinstance(message, HealthPing):
            healthy = message.status is HealthStatus.HEALTHY
            if previous is None or previous[0] != healthy or previous[1] <= message.checked_at:
                table[key] = (healthy, message.checked_at)
    return time.perf_counter() - started


def run_projections(events: list[AuditEvent]) -> float:
    started = time.perf_counter()
    verifier = Verifier()
    projection = Projection()
    for event in events:
        if verifier.check(event):
            projection.apply(event)
    verifier.finish()
    group_totals(projection.episodes.values(), "connector")
    return time.perf_counter() - started


def main(repeats: int) -> dict[str, Any]:
    inputs = workload()
    core_s: list[float] = []
    base_s: list[float] = []
    proj_s: list[float] = []
    events: list[AuditEvent] = []
    for _ in range(repeats):
        elapsed, events = run_core(inputs)
        core_s.append(elapsed)
        base_s.append(run_baseline(inputs))
        proj_s.append(run_projections(events))
    core_rate = [len(inputs) / s for s in core_s]
    base_rate = [len(inputs) / s for s in base_s]
    proj_rate = [len(events) / s for s in proj_s]
    result: dict[str, Any] = {
        "inputs": len(inputs),
        "audit_events": len(events),
        "core_inputs_per_s": {
            "median": statistics.median(core_rate),
            "min": min(core_rate),
            "max": max(core_rate),
        },
        "baseline_inputs_per_s": {"median": statistics.median(base_rate)},
        "ratio_core_to_baseline": statistics.median(core_rate) / statistics.median(base_rate),
        "projection_events_per_s": {
            "median": statistics.median(proj_rate),
            "min": min(proj_rate),
            "max": max(proj_rate),
        },
        "goal_inputs_per_s": 300_000,
    }
    print(f"P4 core: {len(inputs):,} inputs ({len(events):,} audit events), {repeats} repeats")
    print(
        f"  decide+evolve : {result['core_inputs_per_s']['median']:>12,.0f} inputs/s "
        f"(min {min(core_rate):,.0f}, max {max(core_rate):,.0f})"
    )
    print(f"  dict baseline : {result['baseline_inputs_per_s']['median']:>12,.0f} inputs/s")
    print(f"  ratio         : {result['ratio_core_to_baseline']:.3f}")
    print(f"  verify+project: {result['projection_events_per_s']['median']:>12,.0f} events/s")
    return result
