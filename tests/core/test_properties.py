"""Property tests over random input sequences (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import Driver
from streams.models import AdminAction, AuditEvent, EventType, RecoveryMode
from streams.state import Phase
from streams.verify import verify_events

POLICY = {
    "defaults": {
        "failure_threshold": 2,
        "max_retries": 3,
        "attempt_timeout_s": 20,
        "heartbeat_timeout_s": 60,
        "backoff": {"base_s": 1, "cap_s": 30},
        "flap_window": 9,
    },
    "escalation": [{"after_s": 300, "target": {}}, {"after_s": 900, "target": {}}],
    "admins": ["alice"],
}

step = st.one_of(
    st.tuples(st.just("ping"), st.booleans(), st.booleans(), st.integers(0, 90)),
    st.tuples(st.just("tick"), st.integers(1, 400)),
    st.tuples(
        st.just("admin"), st.sampled_from(list(AdminAction)), st.sampled_from(["alice", "eve"])
    ),
    st.tuples(st.just("result"), st.booleans()),
    st.tuples(st.just("notify"), st.booleans()),
    st.tuples(st.just("late_ping"), st.booleans()),
)
scripts = st.lists(step, max_size=60)


def play(
    script: list[tuple[object, ...]], check_each_step: bool = False, **driver: str | None
) -> Driver:
    """`driver`: the Driver's connector_id and tenant_id, if not its own."""
    d = Driver.with_policy(POLICY, **driver)
    d.ping(True)
    for item in script:
        match item:
            case ("ping", bool(healthy), bool(retryable), int(seconds)):
                d.advance(seconds)
                d.ping(healthy, retryable=retryable, position=f"p{d.now}")
            case ("tick", int(seconds)):
                d.advance(seconds)
                d.tick()
            case ("admin", AdminAction() as action, str(actor)):
                d.advance(1)
                incident = d.state.record.incident_id
                until = d.now + 600_000 if action is AdminAction.SILENCE else None
                d.admin(action, actor, incident=incident, until=until)
            case ("result", bool(ok)):
                if d.recovery_requests():
                    d.advance(1)
                    d.recovery_result(ok)
            case ("notify", bool(delivered)):
                d.advance(1)
                d.deliver_pending(frozenset() if delivered else frozenset({"tenant:acme"}))
            case ("late_ping", bool(healthy)):
                d.ping(healthy, at=d.now - 10_000)
            case _:
                raise AssertionError(item)
        if check_each_step:
            # Replay equivalence after every step: the fold of the emitted events is the
            # live state of record.
            assert d.replayed() == d.state.record
    return d


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts)
def test_replay_of_the_events_equals_the_live_state_after_every_step(script: list[Any]) -> None:
    play(script, check_each_step=True)


@settings(max_examples=100, deadline=None)
@given(scripts)
def test_same_inputs_give_byte_identical_outputs(script: list[Any]) -> None:
    first, second = play(script), play(script)
    assert [e.model_dump_json() for e in first.events] == [
        e.model_dump_json() for e in second.events
    ]
    assert first.commands == second.commands


@settings(max_examples=200, deadline=None)
@given(scripts)
def test_invariants_hold(script: list[Any]) -> None:
    d = play(script)
    events = d.events
    # sequence gapless, time monotonic, chain verifies
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(a.occurred_at <= b.occurred_at for a, b in itertools.pairwise(events))
    assert [f for f in verify_events(events, grace_ms=10**12) if not f.benign] == []
    # automatic attempts per episode never exceed max_retries
    per_episode: dict[str, int] = {}
    for e in events:
        if e.type is EventType.RECOVERY_STARTED and e.mode is RecoveryMode.AUTO:
            per_episode[e.incident_id or ""] = per_episode.get(e.incident_id or "", 0) + 1
    assert all(n <= 3 for n in per_episode.values())
    # durations are never negative
    for e in d.of_type(EventType.RECOVERY_COMPLETED):
        assert int(e.attributes["duration_ms"]) >= 0
    # every detection ends in completed, an open incident, a manual resolution, retirement,
    # or is the episode still being retried
    detections = [e.incident_id for e in d.of_type(EventType.FAILURE_DETECTED)]
    ended = {
        e.incident_id
        for e in events
        if e.type in (EventType.RECOVERY_COMPLETED, EventType.INCIDENT_RESOLVED)
    }
    record = d.state.record
    for incident in detections[:-1]:
        assert incident in ended
    if detections and detections[-1] not in ended:
        assert record.phase in (Phase.FAILED, Phase.RETIRED)
        still_trying = record.next_attempt_at is not None or record.attempt_in_flight is not None
        assert (
            record.incident_open
            or still_trying
            or record.flapping
            or (record.phase is Phase.RETIRED)
        )


@settings(max_examples=150, deadline=None)
@given(scripts, st.data())
def test_tampering_with_any_one_event_is_detected(script: list[Any], data: st.DataObject) -> None:
    d = play(script)
    if not d.events:
        return
    events = list(d.events)
    index = data.draw(st.integers(0, len(events) - 1))
    victim = events[index]
    how = data.draw(st.sampled_from(["attribute", "time", "drop", "swap", "type"]))
    if how == "attribute":
        events[index] = victim.model_copy(
            update={"attributes": {**victim.attributes, "retries": "0"}}
        )
        if victim.attributes.get("retries") == "0":
            events[index] = victim.model_copy(update={"actor": "mallory"})
    elif how == "time":
        events[index] = victim.model_copy(update={"occurred_at": victim.occurred_at + 1})
    elif how == "drop":
        if index == len(events) - 1:
            return  # a dropped tail needs a checkpoint (replay issue), not the chain
        del events[index]
    elif how == "swap":
        if index == len(events) - 1:
            return
        events[index], events[index + 1] = events[index + 1], events[index]
    else:
        other = (
            EventType.NOTIFICATION_SUPPRESSED
            if victim.type is not EventType.NOTIFICATION_SUPPRESSED
            else EventType.COMMAND_REJECTED
        )
        events[index] = victim.model_copy(update={"type": other})
    findings = [f for f in verify_events(events, grace_ms=10**12) if not f.benign]
    assert findings, how


def test_identical_resend_is_benign_and_a_changed_one_conflicts() -> None:
    d = play([("ping", False, True, 1), ("tick", 30), ("ping", True, True, 1)])
    events = list(d.events)
    resent = [*events, events[1]]
    findings = verify_events(resent, grace_ms=10**12)
    assert [f.kind for f in findings] == ["benign_duplicate"]
    changed = [*events, replace_attr(events[1])]
    kinds = {f.kind for f in verify_events(changed, grace_ms=10**12)}
    assert "conflicting_duplicate" in kinds


def replace_attr(event: AuditEvent) -> AuditEvent:
    return event.model_copy(update={"attributes": {**event.attributes, "x": "y"}})
