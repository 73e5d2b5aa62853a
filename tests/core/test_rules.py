"""Given/when/then tests, one or more per rule of the core (numbers as in the core issue)."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from agents.testing.driver import Driver
from streams.backoff import backoff_delay_ms
from streams.decider import HANDLERS, DeciderError, Decision, decide
from streams.models import (
    AdminAction,
    AdminCommand,
    DeciderInput,
    EventType,
    HealthPing,
    HealthStatus,
    NotificationResult,
    OutageNotice,
    RecoveryMode,
    RecoveryResult,
    Tick,
    Watch,
)
from streams.policy import Backoff
from streams.state import Phase
from streams.timefmt import iso_from_ms, ms_from_iso

DETECTED = EventType.FAILURE_DETECTED
STARTED = EventType.RECOVERY_STARTED
COMPLETED = EventType.RECOVERY_COMPLETED


def fail_until_exhausted(d: Driver) -> None:
    d.ping(True)
    d.advance(1)
    d.ping(False)
    d.run_for(600)  # no healthy ping: every attempt times out


# -- The spec's BDD scenarios ---------------------------------------------------------------


def test_connector_recovers_automatically() -> None:
    """Scenario: Connector recovers automatically."""
    d = Driver.with_policy({"defaults": {"max_retries": 3, "attempt_timeout_s": 30}})
    d.ping(True, position="offset-100")
    # Given a connector fails
    d.advance(5)
    d.ping(False, failure="timeout", position="offset-120")
    assert d.types() == [DETECTED.value]
    # When the retry policy executes
    d.run_for(10)
    assert STARTED in {e.type for e in d.events}
    assert d.recovery_requests()[0].mode is RecoveryMode.AUTO
    # Then the connector recovers
    d.advance(2)
    d.ping(True, position="offset-120")
    assert d.state.record.phase is Phase.OK
    # And a recovery receipt is recorded
    (completed,) = d.of_type(COMPLETED)
    receipt = completed.attributes
    assert receipt["status"] == "recovered"
    assert receipt["retries"] == "1"
    assert receipt["failure"] == "timeout"
    assert receipt["connector_id"] == "SAP-AR"
    assert receipt["mode"] == "AUTO"
    assert receipt["position_at_failure"] == "offset-120"
    assert receipt["position_at_recovery"] == "offset-120"
    detected_at = d.of_type(DETECTED)[0].occurred_at
    assert receipt["detected_at"] == iso_from_ms(detected_at)
    assert receipt["timestamp"] == receipt["recovered_at"] == iso_from_ms(completed.occurred_at)
    assert receipt["timestamp"].endswith("Z")
    assert int(receipt["duration_ms"]) == completed.occurred_at - detected_at


def test_connector_requires_manual_recovery() -> None:
    """Scenario: Connector requires manual recovery."""
    d = Driver.with_policy({"defaults": {"max_retries": 3, "attempt_timeout_s": 10}})
    # Given a connector fails
    # And retries are exhausted
    fail_until_exhausted(d)
    assert len([e for e in d.of_type(STARTED) if e.mode is RecoveryMode.AUTO]) == 3
    (opened,) = d.of_type(EventType.INCIDENT_OPENED)
    assert opened.attributes["reason"] == "retries_exhausted"
    assert d.types().index(EventType.RETRIES_EXHAUSTED.value) < d.types().index(opened.type.value)
    # When the Platform Admin intervenes
    incident = opened.incident_id
    d.admin(AdminAction.ACKNOWLEDGE, incident=incident)
    d.admin(AdminAction.RECOVER, actor="alice", reason="restarted the SAP gateway")
    manual = d.of_type(STARTED)[-1]
    assert (manual.mode, manual.actor) == (RecoveryMode.MANUAL, "alice")
    assert manual.attributes["reason"] == "restarted the SAP gateway"
    command = d.inputs[-1]
    assert isinstance(command, AdminCommand)
    assert manual.attributes["command_id"] == command.command_id
    d.advance(3)
    d.ping(True)
    # Then the connector is recovered manually
    (completed,) = d.of_type(COMPLETED)
    assert completed.mode is RecoveryMode.MANUAL
    assert completed.attributes["actor"] == "alice"
    assert completed.attributes["retries"] == "4"
    # And an incident is logged
    (resolved,) = d.of_type(EventType.INCIDENT_RESOLVED)
    assert resolved.incident_id == incident == completed.incident_id
    assert d.types()[-2:] == [COMPLETED.value, EventType.INCIDENT_RESOLVED.value]


# -- Rule 1: detection ----------------------------------------------------------------------


def test_one_unhealthy_ping_is_detected_with_the_default_threshold(driver: Driver) -> None:
    driver.ping(True)
    events = driver.ping(False, failure="http_503")
    assert [e.type for e in events] == [DETECTED]
    detected = events[0]
    assert detected.failure == "http_503"
    assert detected.incident_id == "SAP-AR:1" == detected.event_id
    assert detected.attributes["policy_sha256"] == driver.policy.defaults.sha256


def test_detection_is_an_alert_to_the_platform_admin_and_the_tenant(driver: Driver) -> None:
    driver.ping(False)
    targets = {n.target for n in driver.notifications()}
    assert targets == {"platform_admin", "tenant:acme"}
    assert all(n.notification_kind == "failure_detected" for n in driver.notifications())


def test_threshold_debounces_transient_failures() -> None:
    d = Driver.with_policy({"defaults": {"failure_threshold": 3}})
    d.ping(False)
    d.advance(1)
    d.ping(False)
    d.advance(1)
    d.ping(True)  # the run is broken: the counter restarts
    d.advance(1)
    d.ping(False)
    d.advance(1)
    d.ping(False)
    assert d.events == []
    d.advance(1)
    (detected,) = d.ping(False)
    assert detected.attributes["first_failing_at"] == iso_from_ms(d.now - 2000)


def test_missed_heartbeat_is_detected_at_its_deadline() -> None:
    d = Driver.with_policy({"defaults": {"heartbeat_timeout_s": 60}})
    d.ping(True)
    last_ping = d.now
    d.run_for(59)
    assert d.events == []
    d.advance(30)  # the worker's tick runs late: the event still carries the deadline
    detected = d.tick()[0]
    assert detected.failure == "heartbeat_missed"
    assert detected.occurred_at == last_ping + 60_000


def test_an_expected_connector_that_never_pings_is_detected() -> None:
    d = Driver.with_policy({"connectors": {"SAP-AR": {"heartbeat_timeout_s": 30}}})
    d.watch()
    d.run_for(31)
    assert d.types()[:1] == [DETECTED.value]
    assert d.events[0].failure == "heartbeat_missed"


def test_watch_after_a_restart_gives_heartbeats_a_grace() -> None:
    d = Driver.with_policy({"defaults": {"heartbeat_timeout_s": 60}})
    d.ping(True)
    d.advance(3600)  # the worker was down for an hour
    d.watch()
    assert d.tick() == []
    d.run_for(59)
    assert d.events == []


def test_late_pings_never_move_state_back(driver: Driver) -> None:
    driver.ping(False)
    driver.advance(10)
    driver.ping(True)
    assert driver.state.record.phase is Phase.OK
    before = list(driver.events)
    driver.ping(False, at=driver.now - 5000)
    assert driver.events == before
    assert driver.late == 1
    assert driver.state.memory.late_pings == 1


def test_occurred_at_is_monotonic_even_when_a_deadline_fires_late() -> None:
    d = Driver.with_policy({"defaults": {"heartbeat_timeout_s": 10}})
    d.ping(True)
    d.advance(30)
    d.admin(AdminAction.SILENCE, until=d.now + 60_000)
    d.tick()
    times = [e.occurred_at for e in d.events]
    assert times == sorted(times)


# -- Rule 2: flapping -----------------------------------------------------------------------


def test_flapping_starts_one_episode_and_suppresses_per_ping_alerts(driver: Driver) -> None:
    for i in range(30):
        driver.ping(i % 2 == 1)
        driver.advance(1)
    started = driver.of_type(EventType.FLAPPING_STARTED)
    assert len(started) == 1
    flap_at = driver.events.index(started[0])
    after = driver.events[flap_at + 1 :]
    assert not [e for e in after if e.type in (DETECTED, COMPLETED)]
    assert driver.state.record.flapping


def test_flapping_stops_below_the_low_threshold_and_completes_the_episode(driver: Driver) -> None:
    for i in range(10):
        driver.ping(i % 2 == 1)
        driver.advance(1)
    assert driver.state.record.flapping
    incident = driver.state.record.incident_id
    for _ in range(40):
        driver.ping(True)
        driver.advance(1)
    assert driver.types()[-3:-1] == [EventType.FLAPPING_STOPPED.value, COMPLETED.value] or (
        EventType.FLAPPING_STOPPED.value in driver.types()
    )
    stopped = driver.of_type(EventType.FLAPPING_STOPPED)[-1]
    completed = driver.of_type(COMPLETED)[-1]
    assert stopped.sequence < completed.sequence
    assert completed.incident_id == incident
    assert not driver.state.record.flapping


def test_flapping_pauses_automatic_retries() -> None:
    d = Driver.with_policy({"defaults": {"backoff": {"base_s": 1, "cap_s": 1}}})
    for i in range(10):
        d.ping(i % 2 == 0)
        d.advance(0.1)
    assert d.state.record.flapping
    d.run_for(120)
    attempts_while_flapping = [
        e
        for e in d.of_type(STARTED)
        if e.sequence > d.of_type(EventType.FLAPPING_STARTED)[0].sequence
    ]
    assert attempts_while_flapping == []


# -- Rule 3: automatic recovery with capped exponential backoff and full jitter ------------


def test_backoff_is_full_jitter_capped_and_reproducible() -> None:
    backoff = Backoff(base_s=1, cap_s=8)
    for attempt in range(1, 10):
        delay = backoff_delay_ms(backoff, "SAP-AR", "SAP-AR:1", attempt)
        assert 0 <= delay < min(8000, 1000 * 2 ** (attempt - 1))
        assert delay == backoff_delay_ms(backoff, "SAP-AR", "SAP-AR:1", attempt)
    delays = {backoff_delay_ms(backoff, "SAP-AR", f"SAP-AR:{i}", 4) for i in range(50)}
    assert len(delays) > 40  # jitter spreads retries of different episodes


def test_attempt_starts_at_the_recorded_time_and_times_out() -> None:
    d = Driver.with_policy({"defaults": {"attempt_timeout_s": 20, "max_retries": 2}})
    (detected,) = d.ping(False)
    next_at = ms_from_iso(detected.attributes["next_attempt_at"])
    d.run_for(200, step=0.5)
    first, second = d.of_type(STARTED)
    assert first.occurred_at == next_at
    assert ms_from_iso(first.attributes["deadline"]) == next_at + 20_000
    failed = d.of_type(EventType.RECOVERY_FAILED)
    assert failed[0].occurred_at == next_at + 20_000
    assert failed[0].attributes["reason"] == "attempt_timeout"
    assert second.attempt == 2
    assert second.occurred_at == ms_from_iso(failed[0].attributes["next_attempt_at"])
    assert [r.attempt for r in d.recovery_requests()] == [1, 2]
    assert d.recovery_requests()[0].request_id == first.event_id


def test_an_executor_error_fails_the_attempt_at_once() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 3}})
    d.ping(False)
    d.run_for(2)
    assert d.of_type(STARTED)
    d.recovery_result(ok=False, detail="connection refused")
    failed = d.of_type(EventType.RECOVERY_FAILED)[-1]
    assert failed.attributes["reason"] == "action_failed: connection refused"


def test_an_accepted_action_does_not_complete_the_recovery(driver: Driver) -> None:
    driver.ping(False)
    driver.run_for(5)
    driver.recovery_result(ok=True, detail="202 Accepted")
    assert driver.of_type(EventType.RECOVERY_ACTION_ACCEPTED)
    assert driver.state.record.phase is Phase.FAILED
    assert not driver.of_type(COMPLETED)


def test_a_stale_executor_result_is_ignored(driver: Driver) -> None:
    driver.ping(False)
    driver.run_for(200)
    before = len(driver.events)
    driver.recovery_result(ok=False)  # answers attempt 3, long timed out
    assert len(driver.events) == before


# -- Rule 4: recovery is confirmed by health ------------------------------------------------


def test_healthy_ping_during_backoff_recovers_with_zero_retries(driver: Driver) -> None:
    (detected,) = driver.ping(False)
    driver.advance(0.001)
    driver.ping(True)
    (completed,) = driver.of_type(COMPLETED)
    assert completed.attributes["retries"] == "0"
    assert completed.attributes["trigger"] == "spontaneous"
    assert completed.incident_id == detected.incident_id
    driver.run_for(30)
    assert driver.of_type(STARTED) == []  # the scheduled attempt is cancelled


# -- Rules 5 and 6 --------------------------------------------------------------------------


def test_retries_exhausted_opens_an_incident_and_notifies_the_platform_admin() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 2, "attempt_timeout_s": 5}})
    fail_until_exhausted(d)
    auto = [e for e in d.of_type(STARTED) if e.mode is RecoveryMode.AUTO]
    assert len(auto) == 2
    (exhausted,) = d.of_type(EventType.RETRIES_EXHAUSTED)
    (opened,) = d.of_type(EventType.INCIDENT_OPENED)
    assert exhausted.incident_id == opened.incident_id == d.of_type(DETECTED)[0].incident_id
    kinds = {(n.target, n.notification_kind) for n in d.notifications()}
    assert ("platform_admin", "incident_opened") in kinds


def test_non_retryable_failure_opens_an_incident_at_once(driver: Driver) -> None:
    events = driver.ping(False, failure="auth", retryable=False)
    assert [e.type for e in events] == [DETECTED, EventType.INCIDENT_OPENED]
    assert events[1].attributes["reason"] == "non_retryable"
    assert driver.run_for(600) == []
    assert driver.recovery_requests() == []


def test_zero_max_retries_goes_straight_to_a_human() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    events = d.ping(False)
    assert [e.type for e in events] == [
        DETECTED,
        EventType.RETRIES_EXHAUSTED,
        EventType.INCIDENT_OPENED,
    ]


# -- Rule 7: manual path --------------------------------------------------------------------


def test_resolve_closes_the_incident_and_ends_the_episode() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False)
    incident = d.state.record.incident_id
    (resolved,) = d.admin(AdminAction.RESOLVE, incident=incident, reason="decommissioned feed")
    assert resolved.type is EventType.INCIDENT_RESOLVED
    assert resolved.attributes["resolution"] == "manual"
    assert d.state.record.phase is Phase.OK
    d.advance(1)
    assert d.ping(True) == []


def test_commands_are_rejected_loudly(driver: Driver) -> None:
    driver.ping(True)
    cases: list[tuple[AdminAction, dict[str, Any], str]] = [
        (AdminAction.RECOVER, {}, "is not failed"),
        (AdminAction.ACKNOWLEDGE, {"incident": "SAP-AR:99"}, "is not open"),
        (AdminAction.RESOLVE, {}, "incident id is required"),
        (AdminAction.SILENCE, {"until": driver.now - 1}, "later than the command"),
    ]
    for action, kwargs, why in cases:
        (rejected,) = driver.admin(action, **kwargs)
        assert rejected.type is EventType.COMMAND_REJECTED
        assert why in rejected.attributes["rejection"]
        assert rejected.attributes["action"] == action.value


def test_command_for_an_unknown_connector_is_rejected() -> None:
    d = Driver(connector_id="NO-SUCH")
    (rejected,) = d.admin(AdminAction.RECOVER)
    assert "unknown connector" in rejected.attributes["rejection"]
    (again,) = d.admin(AdminAction.RETIRE)
    assert again.type is EventType.COMMAND_REJECTED


def test_only_admins_of_the_policy_may_act() -> None:
    d = Driver.with_policy({"admins": ["alice"]})
    d.ping(False)
    (rejected,) = d.admin(AdminAction.RECOVER, actor="mallory")
    assert "not in the policy's admins" in rejected.attributes["rejection"]
    (started,) = d.admin(AdminAction.RECOVER, actor="alice")
    assert started.type is STARTED


def test_acknowledging_twice_or_a_closed_incident_is_rejected() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False)
    incident = d.state.record.incident_id
    (ack,) = d.admin(AdminAction.ACKNOWLEDGE, incident=incident)
    assert ack.type is EventType.INCIDENT_ACKNOWLEDGED
    (again,) = d.admin(AdminAction.ACKNOWLEDGE, incident=incident)
    assert "already acknowledged" in again.attributes["rejection"]
    d.advance(1)
    d.ping(True)
    (closed,) = d.admin(AdminAction.ACKNOWLEDGE, incident=incident)
    assert "is not open" in closed.attributes["rejection"]


def test_manual_attempt_that_fails_opens_an_incident_without_more_auto_retries() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 3, "attempt_timeout_s": 10}})
    d.ping(False)
    d.admin(AdminAction.RECOVER)  # during backoff: supersedes the scheduled attempt
    d.run_for(11)
    failed = d.of_type(EventType.RECOVERY_FAILED)[-1]
    assert failed.mode is RecoveryMode.MANUAL
    assert d.of_type(EventType.INCIDENT_OPENED)[0].attributes["reason"] == "manual_recovery_failed"
    d.run_for(300)
    assert len(d.of_type(STARTED)) == 1


def test_silence_suppresses_notifications_but_records_evidence(driver: Driver) -> None:
    driver.ping(True)
    (silenced,) = driver.admin(
        AdminAction.SILENCE, until=driver.now + 600_000, reason="maintenance"
    )
    assert silenced.type is EventType.SILENCED
    driver.advance(1)
    driver.ping(False)
    assert driver.of_type(DETECTED)
    assert driver.notifications() == []
    (suppressed,) = driver.of_type(EventType.NOTIFICATION_SUPPRESSED)
    assert suppressed.attributes["reason"] == "silenced"
    driver.advance(700)
    driver.ping(True)
    assert {n.notification_kind for n in driver.notifications()} == {"recovered"}


def test_retire_closes_the_incident_and_ignores_later_pings() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False)
    events = d.admin(AdminAction.RETIRE)
    assert [e.type for e in events] == [EventType.INCIDENT_RESOLVED, EventType.RETIRED]
    d.advance(1)
    assert d.ping(False) == []
    assert d.run_for(300) == []
    (rejected,) = d.admin(AdminAction.RECOVER)
    assert "retired" in rejected.attributes["rejection"]


# -- Rule 8: escalation ---------------------------------------------------------------------

ESCALATION = {
    "defaults": {"max_retries": 0},
    "escalation": [
        {"after_s": 900, "target": {"webhook": "https://hooks.example/secondary"}},
        {"after_s": 1800, "target": {"webhook": "https://hooks.example/manager"}},
    ],
}


def test_unacknowledged_incident_escalates_step_by_step() -> None:
    d = Driver.with_policy(ESCALATION)
    d.ping(False)
    opened_at = d.of_type(EventType.INCIDENT_OPENED)[0].occurred_at
    d.run_for(2000, step=60)
    escalated = d.of_type(EventType.INCIDENT_ESCALATED)
    assert [e.attributes["target"] for e in escalated] == ["escalation:1", "escalation:2"]
    assert [e.occurred_at - opened_at for e in escalated] == [900_000, 1_800_000]
    assert [n.target for n in d.notifications() if n.notification_kind == "incident_escalated"] == [
        "escalation:1",
        "escalation:2",
    ]


def test_acknowledgement_stops_escalation() -> None:
    d = Driver.with_policy(ESCALATION)
    d.ping(False)
    d.run_for(300)
    d.admin(AdminAction.ACKNOWLEDGE, incident=d.state.record.incident_id)
    d.run_for(3000, step=60)
    assert d.of_type(EventType.INCIDENT_ESCALATED) == []


# -- Rule 9: tenant notification ------------------------------------------------------------


def test_tenant_is_notified_once_per_incident_and_kind(driver: Driver) -> None:
    driver.ping(False)
    driver.deliver_pending()
    driver.advance(1)
    driver.ping(True)
    driver.deliver_pending()
    tenant = [n for n in driver.notifications() if n.target == "tenant:acme"]
    assert [n.notification_kind for n in tenant] == ["failure_detected", "recovered"]
    assert len({n.dedup_key for n in tenant}) == 2
    sent = driver.of_type(EventType.NOTIFICATION_SENT)
    assert len(sent) == 4
    again = driver.deliver(tenant[0])  # the notifier re-reports a delivery
    assert again == []


def test_platform_scoped_connectors_notify_no_tenant() -> None:
    d = Driver(tenant_id=None)
    d.ping(False)
    assert {n.target for n in d.notifications()} == {"platform_admin"}


def test_failed_tenant_notification_escalates_to_the_platform_admin(driver: Driver) -> None:
    driver.ping(False)
    events = driver.deliver_pending(fail_targets=frozenset({"tenant:acme"}))
    types = [e.type for e in events]
    assert EventType.NOTIFICATION_FAILED in types
    escalated = driver.of_type(EventType.INCIDENT_ESCALATED)
    assert [(e.attributes["target"], e.attributes["reason"]) for e in escalated] == [
        ("platform_admin", "tenant_notification_failed")
    ]
    assert driver.state.record.incident_open
    assert driver.notifications()[-1].target == "platform_admin"


def test_failed_escalation_notification_moves_to_the_next_step() -> None:
    d = Driver.with_policy(ESCALATION)
    d.ping(False)
    d.deliver_pending()
    d.run_for(901, step=60)
    d.deliver_pending(fail_targets=frozenset({"escalation:1"}))
    escalated = d.of_type(EventType.INCIDENT_ESCALATED)
    assert [e.attributes["target"] for e in escalated] == ["escalation:1", "escalation:2"]
    assert escalated[1].attributes["reason"] == "notification_failed"
    d.run_for(2000, step=60)
    assert len(d.of_type(EventType.INCIDENT_ESCALATED)) == 2  # the timer does not repeat step 2


def test_a_late_tenant_notification_failure_does_not_lower_the_escalation() -> None:
    """The tenant's notifier answers after the timer escalated to step 1: the failure is
    recorded, and the incident stays at step 1 (no `incident.escalated` back at level 0)."""
    d = Driver.with_policy(ESCALATION)
    d.ping(False)
    d.run_for(901, step=60)
    assert [e.attributes["level"] for e in d.of_type(EventType.INCIDENT_ESCALATED)] == ["1"]
    escalations_before = len(d.of_type(EventType.INCIDENT_ESCALATED))

    late = d.deliver_pending(fail_targets=frozenset({"tenant:acme"}))

    failed = [e for e in late if e.type is EventType.NOTIFICATION_FAILED]
    assert failed
    assert {e.attributes["target"] for e in failed} == {"tenant:acme"}
    assert len(d.of_type(EventType.INCIDENT_ESCALATED)) == escalations_before
    assert d.state.record.escalation_level == 1
    assert d.state.record.next_escalation_level == 2  # the timer's next step still stands
    d.run_for(1000, step=60)
    levels = [e.attributes["level"] for e in d.of_type(EventType.INCIDENT_ESCALATED)]
    assert levels == ["1", "2"]


# -- Rule 10: evidence chain ----------------------------------------------------------------


def test_events_are_chained_with_deterministic_ids() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 2, "attempt_timeout_s": 5}})
    fail_until_exhausted(d)
    assert [e.sequence for e in d.events] == list(range(1, len(d.events) + 1))
    assert [e.event_id for e in d.events] == [f"SAP-AR:{i}" for i in range(1, len(d.events) + 1)]
    assert d.events[0].prev_hash == "0" * 64
    for previous, event in zip(d.events, d.events[1:], strict=False):
        assert event.prev_hash == previous.hash
    assert all(e.attributes["source"].startswith("in/") for e in d.events)


def test_unknown_input_types_are_rejected() -> None:
    d = Driver()
    with pytest.raises(DeciderError):
        decide(
            d.state,
            HealthPing(connector_id="OTHER", status=HealthStatus.HEALTHY, checked_at=d.now),
            d.policy,
        )
    with pytest.raises((TypeError, AssertionError)):
        decide(d.state, object(), d.policy)  # type: ignore[arg-type]  # the wrong type is the test


def test_every_input_type_has_a_handler() -> None:
    """`decide`'s table has one handler per input type, and each answers."""
    d = Driver()
    d.ping(False)
    samples: dict[type, DeciderInput] = {
        HealthPing: HealthPing(
            connector_id="SAP-AR", status=HealthStatus.HEALTHY, checked_at=d.now
        ),
        Tick: Tick(connector_id="SAP-AR", now=d.now),
        Watch: Watch(connector_id="SAP-AR", at=d.now),
        AdminCommand: AdminCommand(
            command_id="c1",
            action=AdminAction.SILENCE,
            connector_id="SAP-AR",
            actor="alice",
            until=d.now + 60_000,
            issued_at=d.now,
        ),
        RecoveryResult: RecoveryResult(
            request_id="r",
            connector_id="SAP-AR",
            incident_id="SAP-AR:1",
            attempt=1,
            ok=True,
            finished_at=d.now,
        ),
        NotificationResult: NotificationResult(
            dedup_key="k",
            connector_id="SAP-AR",
            incident_id="SAP-AR:1",
            target="platform_admin",
            level=0,
            delivered=True,
            finished_at=d.now,
        ),
        OutageNotice: OutageNotice(
            connector_id="SAP-AR",
            outage_id="outage:dependency:sap-prod:1",
            group="dependency:sap-prod",
            incident_id="SAP-AR:1",
            at=d.now,
        ),
    }
    assert set(HANDLERS) == set(samples) == set(get_args(DeciderInput))
    for message in samples.values():
        assert isinstance(decide(d.state, message, d.policy), Decision)


@pytest.mark.parametrize("action", list(AdminAction))
def test_every_answer_to_a_command_carries_its_id(action: AdminAction) -> None:
    """The admin CLI waits for events with the command's id: accepted or rejected."""
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False)
    incident = d.state.record.incident_id
    until = d.now + 60_000 if action is AdminAction.SILENCE else None
    answers = d.admin(action, incident=incident, until=until)
    assert answers
    command = d.inputs[-1]
    assert isinstance(command, AdminCommand)
    command_id = command.command_id
    assert all(e.attributes["command_id"] == command_id for e in answers)
    assert EventType.COMMAND_REJECTED not in {e.type for e in answers}


def test_a_failed_notification_escalates_even_after_the_connector_recovered(
    driver: Driver,
) -> None:
    driver.ping(False)
    driver.advance(1)
    driver.ping(True)  # recovered before the notifier gave up on the tenant's webhook
    assert driver.state.record.phase is Phase.OK
    driver.deliver_pending(fail_targets=frozenset({"tenant:acme"}))
    (escalated,) = driver.of_type(EventType.INCIDENT_ESCALATED)
    assert escalated.attributes["target"] == "platform_admin"
    assert driver.state.record.incident_open
    # the next failure episode closes that incident first, so every incident ends
    driver.advance(60)
    events = driver.ping(False)
    assert [e.type for e in events[:2]] == [EventType.INCIDENT_RESOLVED, DETECTED]
    assert events[0].attributes["resolution"] == "superseded"
    assert events[0].incident_id != events[1].incident_id
