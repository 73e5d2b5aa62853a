"""The ping fast path (`_repeats_steady_state`) is an optimisation only: whenever it is
taken, judging the ping in full (`_judge_ping`) decides exactly the same. Every ping takes
one path, `decide_ping`: `decide` and the processor both call it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import T0
from streams.decider import Decision, _judge_ping, _repeats_steady_state, decide, decide_ping
from streams.models import HealthPing, HealthStatus, Tick
from streams.policy import Policy, parse_policy
from streams.state import ConnectorState, Phase

CONNECTOR = "SAP-AR"

policies = st.builds(
    lambda threshold, window, retries: parse_policy(
        {
            "defaults": {
                "failure_threshold": threshold,
                "flap_window": window,
                "max_retries": retries,
                "backoff": {"base_s": 1, "cap_s": 4},
                "attempt_timeout_s": 5,
            }
        }
    ),
    st.integers(1, 3),
    st.integers(3, 7),
    st.integers(0, 2),
)
# Runs of identical pings reach the steady states; the other fields vary what the fast path
# must notice (tenant, position, failure kind, retryability, late arrival).
runs = st.tuples(
    st.integers(1, 12),  # how many identical pings
    st.booleans(),  # healthy
    st.sampled_from(["timeout", "auth", None]),
    st.booleans(),  # retryable
    st.sampled_from([None, "lsn-1", "lsn-2"]),
    st.sampled_from(["acme", "globex", None]),
    st.integers(-1500, 4000),  # ms between pings; below 0 a ping arrives late
    st.integers(0, 20),  # seconds the clock ticks after the run
)


def ping(run: tuple[Any, ...], checked_at: int) -> HealthPing:
    _, healthy, failure, retryable, position, tenant, _, _ = run
    return HealthPing(
        connector_id=CONNECTOR,
        tenant_id=tenant,
        status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
        failure=None if healthy else failure,
        retryable=retryable,
        checked_at=checked_at,
        position=position,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, st.lists(runs, min_size=1, max_size=12))
def test_the_fast_path_decides_as_the_full_judgement_does(
    policy: Policy, script: list[tuple[Any, ...]]
) -> None:
    rules = policy.for_connector(CONNECTOR)
    state = ConnectorState.new(CONNECTOR)
    now = T0
    for run in script:
        count, step_ms, tick_s = run[0], run[6], run[7]
        for index in range(count):
            now += step_ms
            message = ping(run, now)
            source = f"in/{now}/{index}"
            decision = decide(state, message, policy, source)
            if state.last_checked_at is None or message.checked_at >= state.last_checked_at:
                # Not late: the full judgement is the reference.
                assert decision == _judge_ping(state, message, policy, rules, source)
            judged = decide_ping(state, message, policy, source)
            if isinstance(judged, ConnectorState):  # what a processor applies without a Decision
                assert decision == Decision((), (), judged)
                assert judged.record is state.record
                assert judged.memory is state.memory
                assert judged.last_checked_at == message.checked_at
            else:
                assert judged == decision
            state = decision.state
            now = max(now, state.last_checked_at or now)
        now += tick_s * 1000
        state = decide(state, Tick(connector_id=CONNECTOR, now=now), policy).state


def steady(healthy: bool, policy: Policy, count: int = 30) -> tuple[ConnectorState, HealthPing]:
    state = ConnectorState.new(CONNECTOR)
    run = (count, healthy, "timeout", True, "lsn-1", "acme", 1000, 0)
    for index in range(count):
        state = decide(state, ping(run, T0 + index * 1000), policy).state
    return state, ping(run, T0 + count * 1000)


def test_the_fast_path_is_taken_by_steady_healthy_and_steady_failed_connectors() -> None:
    """Without this the property above could hold by never taking the fast path."""
    policy = parse_policy({"defaults": {"flap_window": 5, "failure_threshold": 2}})
    rules = policy.for_connector(CONNECTOR)
    for healthy, phase in ((True, Phase.OK), (False, Phase.FAILED)):
        state, next_ping = steady(healthy, policy)
        assert state.record.phase is phase
        assert _repeats_steady_state(state.record, state.memory, next_ping, rules)
        fast = decide_ping(state, next_ping, policy)
        assert isinstance(fast, ConnectorState)
        assert fast.heartbeat_deadline == next_ping.checked_at + rules.heartbeat_timeout_ms
        moved = decide(state, next_ping, policy)
        assert moved.events == ()
        assert moved.state.record is state.record
        assert moved.state.memory is state.memory
        changed = next_ping.model_copy(update={"position": "lsn-2"})
        assert not _repeats_steady_state(state.record, state.memory, changed, rules)
