"""Crash repair (agents/worker/repair.py): every way a SIGKILL can cut a step."""

from __future__ import annotations

from agents.testing.driver import T0, Driver
from agents.worker.repair import reconcile
from streams.decider import decide
from streams.models import AuditEvent, HealthPing, HealthStatus, NotificationRequest
from streams.policy import parse_policy
from streams.state import ConnectorState

POLICY = parse_policy({"defaults": {"max_retries": 0}})


def unhealthy(at: int = T0) -> HealthPing:
    return HealthPing(
        connector_id="SAP-AR",
        status=HealthStatus.UNHEALTHY,
        failure="auth",
        retryable=False,
        checked_at=at,
    )


def test_nothing_logged_ahead_writes_everything() -> None:
    state = ConnectorState.new("SAP-AR")
    decision = decide(state, unhealthy(), POLICY, "in/0/5")
    result = reconcile(state, decision, [])
    assert result.events == decision.events
    assert result.commands == decision.commands
    assert result.dropped == 0


def test_outputs_written_state_lost_drops_all_rederived_outputs() -> None:
    state = ConnectorState.new("SAP-AR")
    first = decide(state, unhealthy(), POLICY, "in/0/5")
    assert len(first.events) == 2  # detected + incident opened
    again = decide(state, unhealthy(), POLICY, "in/0/5")
    result = reconcile(state, again, list(first.events))
    assert result.events == ()
    assert result.commands == ()
    assert result.dropped == 2
    assert result.state == first.state


def test_partially_written_outputs_write_only_the_rest() -> None:
    state = ConnectorState.new("SAP-AR")
    first = decide(state, unhealthy(), POLICY, "in/0/5")
    again = decide(state, unhealthy(), POLICY, "in/0/5")
    result = reconcile(state, again, [first.events[0]])
    assert [e.sequence for e in result.events] == [2]
    assert result.events[0] == first.events[1]
    # commands caused by the written event are not sent again; the rest are
    assert all(isinstance(c, NotificationRequest) for c in result.commands)
    causes = {c.cause_event_id for c in result.commands if isinstance(c, NotificationRequest)}
    assert causes == {first.events[1].event_id}


def test_a_lagging_table_replays_several_inputs_against_the_log() -> None:
    d = Driver(policy=POLICY)
    d.ping(False, failure="auth", retryable=False)
    d.advance(1)
    d.ping(True)
    logged = list(d.events)
    state = ConnectorState.new("SAP-AR")
    replayed = ConnectorState.new("SAP-AR")
    written: list[AuditEvent] = []
    for index, message in enumerate(d.inputs, start=1):
        decision = decide(replayed, message, POLICY, f"in/{index}")
        result = reconcile(replayed, decision, logged)
        written.extend(result.events)
        replayed = result.state
    assert written == []
    assert replayed.record == d.state.record
    assert state.record.sequence == 0


def test_divergence_lets_the_log_win() -> None:
    state = ConnectorState.new("SAP-AR")
    logged = decide(state, unhealthy(), POLICY, "in/0/5").events
    other_policy = parse_policy({"defaults": {"max_retries": 3}})
    retryable = HealthPing(
        connector_id="SAP-AR", status=HealthStatus.UNHEALTHY, failure="timeout", checked_at=T0
    )
    decision = decide(state, retryable, other_policy, "in/0/5")
    result = reconcile(state, decision, list(logged))
    assert result.diverged
    assert result.events == ()
    assert result.commands == ()
    assert result.state.record.sequence == 2
    assert result.state.record.incident_open
