"""`decide(state, input) -> Decision`: every rule of connector recovery, in one place.

The decider emits audit events through an `_Emitter` that chains them (sequence, prev_hash,
hash) and folds each through `evolve` as it goes, so the record it returns is by
construction the fold of the events it emitted. Commands (recovery and notification
requests) are emitted beside the event that causes them and carry its id.

Rule numbers in comments refer to the core issue's behaviour list.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar, assert_never

from streams import flapping
from streams.backoff import backoff_delay_ms
from streams.chain import chain_hash
from streams.evidence import (
    EVENT_TYPE,
    CommandRejected,
    Evidence,
    FailureDetected,
    FlappingStarted,
    FlappingStopped,
    IncidentAcknowledged,
    IncidentEscalated,
    IncidentOpened,
    IncidentResolved,
    NotificationFailed,
    NotificationReleased,
    NotificationSent,
    NotificationSuppressed,
    OutageLinked,
    OutageReleased,
    Provenance,
    RecoveryActionAccepted,
    RecoveryCompleted,
    RecoveryFailed,
    RecoveryStarted,
    Retired,
    RetriesExhausted,
    Silenced,
)
from streams.evidence import write as evidence_map
from streams.evolve import evolve
from streams.grouping import group_of
from streams.models import (
    AdminAction,
    AdminCommand,
    AuditEvent,
    Command,
    DeciderInput,
    EscalationReason,
    FailureCause,
    HealthPing,
    HealthStatus,
    NotificationKind,
    NotificationRequest,
    NotificationResult,
    OpenReason,
    OutageNotice,
    OutageRole,
    RecoveryMode,
    RecoveryRequest,
    RecoveryResult,
    Tick,
    Watch,
)
from streams.policy import ConnectorPolicy, Policy
from streams.state import ConnectorState, DetectorMemory, Phase, Record
from streams.timefmt import iso_from_ms

PLATFORM_ADMIN = "platform_admin"
TENANT_LEVEL = -1
_MAX_DEADLINES_PER_TICK = 10_000
_HEALTHY = HealthStatus.HEALTHY


class DeadlineKind(StrEnum):
    """What a connector waits for (`next_deadline`); the tick fires it."""

    HEARTBEAT = "heartbeat"
    ATTEMPT = "attempt"
    ATTEMPT_TIMEOUT = "attempt_timeout"
    ESCALATION = "escalation"
    NOTIFY = "notify"  # a failure's page held for its outage (group wait) goes out


# The deadline of nearly every connector, on the path every tick takes: one global lookup
# instead of a global and an attribute.
_HEARTBEAT = DeadlineKind.HEARTBEAT


class DeciderError(RuntimeError):
    """An input the decider cannot judge (a bug in the shell, never bad user data)."""


class Decision(NamedTuple):
    """What one input caused. A NamedTuple: built for every input, so it must be cheap."""

    events: tuple[AuditEvent, ...]
    commands: tuple[Command, ...]
    state: ConnectorState
    late: bool = False


# The steady-ping path builds its tuples with tuple.__new__: no generated keyword/default
# handling, no Python-level `_make` call.
_tuple_new = tuple.__new__


def tenant_target(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def escalation_target(level: int) -> str:
    return PLATFORM_ADMIN if level == 0 else f"escalation:{level}"


class _Emitter:
    """Builds chained events and the commands they cause, folding as it goes."""

    __slots__ = (
        "commands",
        "events",
        "heartbeat_deadline",
        "last_checked_at",
        "memory",
        "policy",
        "record",
        "rules",
        "source",
    )

    def __init__(self, state: ConnectorState, policy: Policy, source: str | None) -> None:
        self.record = state.record
        self.memory = state.memory
        self.last_checked_at = state.last_checked_at
        self.heartbeat_deadline = state.heartbeat_deadline
        self.policy = policy
        self.rules = policy.for_connector(state.record.connector_id)
        self.source = source
        self.events: list[AuditEvent] = []
        self.commands: list[Command] = []

    # -- events ---------------------------------------------------------------------------
    def emit(
        self,
        evidence: Evidence,
        at: int,
        *,
        incident_id: str | None = None,
        attempt: int | None = None,
        mode: RecoveryMode | None = None,
        actor: str | None = None,
        failure: str | None = None,
    ) -> AuditEvent:
        """Chain an event of the type `evidence` is the view of, and fold it."""
        record = self.record
        sequence = record.sequence + 1
        attrs = evidence_map(evidence)
        if self.source is not None:
            attrs.update(evidence_map(Provenance(self.source, len(self.events))))
        fields: dict[str, Any] = {
            "event_id": f"{record.connector_id}:{sequence}",
            "type": EVENT_TYPE[type(evidence)],
            "connector_id": record.connector_id,
            "tenant_id": self.memory.tenant_id or record.tenant_id,
            "sequence": sequence,
            # occurred_at is monotonic per connector: no duration is ever negative.
            "occurred_at": max(at, record.last_occurred_at),
            "incident_id": incident_id if incident_id is not None else record.incident_id,
            "attempt": attempt,
            "mode": mode,
            "actor": actor,
            "failure": failure,
            "attributes": attrs,
            "prev_hash": record.head_hash,
        }
        event = AuditEvent.model_construct(**fields, hash=chain_hash(record.head_hash, fields))
        self.events.append(event)
        self.record = evolve(record, event)
        return event

    # -- notifications (rule 9) -----------------------------------------------------------
    def notify(
        self, cause: AuditEvent, kind: NotificationKind, audiences: list[tuple[str, int]]
    ) -> None:
        incident_id = cause.incident_id or cause.event_id
        record = self.record
        if (
            record.outage_id is not None
            and incident_id == record.incident_id
            and self.policy.outages_take_over
        ):
            self.suppress_for_outage(kind, audiences, cause.occurred_at, record.outage_id)
            return
        silenced = self.record.silenced_until
        if silenced is not None and silenced > cause.occurred_at:
            self.emit(
                NotificationSuppressed(
                    notification_kind=kind,
                    targets=",".join(target for target, _ in audiences),
                    reason="silenced",
                    silenced_until=silenced,
                ),
                cause.occurred_at,
                incident_id=incident_id,
            )
            return
        for target, level in audiences:
            self.commands.append(
                NotificationRequest(
                    dedup_key=f"{incident_id}:{kind}:{target}",
                    notification_kind=kind,
                    target=target,
                    level=level,
                    connector_id=cause.connector_id,
                    tenant_id=cause.tenant_id,
                    incident_id=incident_id,
                    failure=self.record.failure,
                    cause_event_id=cause.event_id,
                    occurred_at=cause.occurred_at,
                    summary=_summary(kind, cause),
                )
            )

    def suppress_for_outage(
        self, kind: NotificationKind, audiences: list[tuple[str, int]], at: int, outage_id: str
    ) -> None:
        """The episode is in an outage, which pages its audiences instead (docs/outages.md)."""
        self.emit(
            NotificationSuppressed(
                notification_kind=kind,
                targets=",".join(target for target, _ in audiences),
                reason="outage",
                outage_id=outage_id,
            ),
            at,
        )

    def audiences(self, *, admin: bool = True, tenant: bool = True) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        if admin:
            out.append((PLATFORM_ADMIN, 0))
        tenant_id = self.memory.tenant_id or self.record.tenant_id
        if tenant and tenant_id is not None:
            out.append((tenant_target(tenant_id), TENANT_LEVEL))
        return out

    def decision(self, *, late: bool = False) -> Decision:
        return Decision(
            tuple(self.events),
            tuple(self.commands),
            ConnectorState(self.record, self.memory, self.last_checked_at, self.heartbeat_deadline),
            late,
        )


def _summary(kind: NotificationKind, event: AuditEvent) -> str:
    match kind:
        case NotificationKind.FAILURE_DETECTED:
            what = f"failed ({event.failure})"
        case NotificationKind.RECOVERED:
            what = "recovered"
        case NotificationKind.INCIDENT_OPENED:
            what = "needs a human: incident opened"
        case NotificationKind.INCIDENT_ESCALATED:
            what = "incident escalated"
        case NotificationKind.FLAPPING_STARTED:
            what = "is flapping"
        case NotificationKind.FLAPPING_STOPPED:
            what = "stopped flapping"
        case NotificationKind.OUTAGE_OPENED | NotificationKind.OUTAGE_RESOLVED:
            what = f"is in outage {event.incident_id}"  # an outage's own summary is its own
        case _:
            assert_never(kind)
    return f"Connector {event.connector_id} {what}"


# --------------------------------------------------------------------------------------------
# Episode rules
# --------------------------------------------------------------------------------------------


def _supersede_open_incident(out: _Emitter, at: int) -> None:
    """An incident still open from an episode that already recovered (a notification that
    could not be delivered) is closed before a new episode begins, so every incident in the
    log ends."""
    if out.record.incident_open:
        out.emit(
            IncidentResolved(resolution="superseded", reason="a new failure episode began"), at
        )


def _next_attempt_at(out: _Emitter, at: int, incident_id: str, auto_attempts: int) -> int | None:
    """Rule 3: when the next automatic attempt of the episode is due (capped exponential
    backoff with full jitter, from `at`), or None when its retries are used up."""
    rules = out.rules
    if auto_attempts >= rules.max_retries:
        return None
    delay = backoff_delay_ms(rules.backoff, out.record.connector_id, incident_id, auto_attempts + 1)
    return max(at, out.record.last_occurred_at) + delay


def _detect(out: _Emitter, at: int, failure: str, retryable: bool, first_failing_at: int) -> None:
    """Rule 1 (+3, 5, 6): open a failure episode and decide what comes next."""
    _supersede_open_incident(out, at)
    connector_id = out.record.connector_id
    incident_id = f"{connector_id}:{out.record.sequence + 1}"
    next_attempt_at = _next_attempt_at(out, at, incident_id, 0) if retryable else None
    memory = out.memory
    group = group_of(
        connector_id,
        memory.tenant_id or out.record.tenant_id,
        failure,
        memory.dependency,
        out.policy,
    )
    # A grouped failure's page waits for an outage to link it (Alertmanager's group_wait).
    wait_ms = out.policy.outages.group_wait_ms
    held = group is not None and out.policy.outages_take_over and wait_ms > 0
    notify_at = max(at, out.record.last_occurred_at) + wait_ms if held else None
    detected = out.emit(
        FailureDetected(
            retryable=retryable,
            first_failing_at=min(first_failing_at, at),
            policy_sha256=out.rules.sha256,
            position=memory.last_position,
            next_attempt_at=next_attempt_at,
            group=group,
            notify_at=notify_at,
        ),
        at,
        incident_id=incident_id,
        failure=failure,
    )
    if notify_at is None:
        out.notify(detected, NotificationKind.FAILURE_DETECTED, out.audiences())
    if not retryable:
        _open_incident(out, detected.occurred_at, OpenReason.NON_RETRYABLE)
    elif next_attempt_at is None:
        _exhausted(out, detected.occurred_at)


def _exhausted(out: _Emitter, at: int) -> None:
    """Rule 5."""
    out.emit(RetriesExhausted(out.rules.max_retries), at, failure=out.record.failure)
    _open_incident(out, at, OpenReason.RETRIES_EXHAUSTED)


def _opens_silently(reason: OpenReason) -> bool:
    """An incident opened for a failed notification notifies nobody on its own: the
    escalation event that follows carries the notification."""
    match reason:
        case OpenReason.TENANT_NOTIFICATION_FAILED | OpenReason.NOTIFICATION_FAILED:
            return True
        case (
            OpenReason.NON_RETRYABLE
            | OpenReason.RETRIES_EXHAUSTED
            | OpenReason.MANUAL_RECOVERY_FAILED
        ):
            return False
        case _:
            assert_never(reason)


def _open_incident(out: _Emitter, at: int, reason: OpenReason) -> None:
    if out.record.incident_open:
        return
    silent = _opens_silently(reason)
    step = _next_escalation(out, from_level=0, opened_at=max(at, out.record.last_occurred_at))
    opened = out.emit(
        IncidentOpened(reason, -1 if silent else 0, *step), at, failure=out.record.failure
    )
    if not silent:
        out.notify(opened, NotificationKind.INCIDENT_OPENED, out.audiences())


class _EscalationStep(NamedTuple):
    level: int | None
    at: int | None


_NO_ESCALATION = _EscalationStep(None, None)


def _next_escalation(out: _Emitter, *, from_level: int, opened_at: int) -> _EscalationStep:
    """Rule 8: the next escalation step after `from_level`, timed from the incident's opening."""
    next_level = from_level + 1
    after_ms = out.policy.escalation_after_ms(next_level - 1)
    if after_ms is None:
        return _NO_ESCALATION
    return _EscalationStep(next_level, opened_at + after_ms)


def _escalate(out: _Emitter, at: int, level: int, reason: EscalationReason) -> None:
    record = out.record
    opened_at = record.incident_opened_at if record.incident_opened_at is not None else at
    step = _next_escalation(out, from_level=level, opened_at=opened_at)
    if record.next_escalation_level is not None and record.next_escalation_level > level:
        # A timer step beyond this level is still pending: keep it.
        step = _EscalationStep(record.next_escalation_level, record.next_escalation_at or at)
    if record.acknowledged:
        step = _NO_ESCALATION
    target = escalation_target(level)
    escalated = out.emit(IncidentEscalated(level, target, reason, *step), at)
    out.notify(escalated, NotificationKind.INCIDENT_ESCALATED, [(target, level)])


def _attempt_failed(out: _Emitter, at: int, reason: str) -> None:
    """Rule 3/5: an attempt failed; schedule the next one or hand over to a human."""
    record = out.record
    manual = record.attempt_mode is RecoveryMode.MANUAL
    if record.restarts_held and not manual:
        # its outage holds the restarts: no next attempt, and no retries used up either
        out.emit(
            RecoveryFailed(reason, None),
            at,
            attempt=record.attempt_in_flight,
            mode=record.attempt_mode,
            actor=record.attempt_actor,
            failure=record.failure,
        )
        return
    next_attempt_at = None
    if not manual:
        assert record.incident_id is not None  # noqa: S101 - an attempt implies an episode
        next_attempt_at = _next_attempt_at(out, at, record.incident_id, record.auto_attempts)
    failed = out.emit(
        RecoveryFailed(reason, next_attempt_at),
        at,
        attempt=record.attempt_in_flight,
        mode=record.attempt_mode,
        actor=record.attempt_actor,
        failure=record.failure,
    )
    if next_attempt_at is not None:
        return
    if manual:
        _open_incident(out, failed.occurred_at, OpenReason.MANUAL_RECOVERY_FAILED)
    else:
        _exhausted(out, failed.occurred_at)


def _start_attempt(
    out: _Emitter,
    at: int,
    mode: RecoveryMode,
    actor: str | None,
    command: AdminCommand | None = None,
) -> None:
    """Rule 3 (AUTO) and rule 7 (MANUAL, asked for by `command`)."""
    record = out.record
    assert record.incident_id is not None  # noqa: S101 - only called inside an episode
    attempt = record.attempts + 1
    start = max(at, record.last_occurred_at)
    deadline = start + out.rules.attempt_timeout_ms
    started = out.emit(
        RecoveryStarted(
            deadline=deadline,
            action=out.rules.recovery_action.type,
            command_id=None if command is None else command.command_id,
            reason=None if command is None else command.reason or None,
        ),
        at,
        attempt=attempt,
        mode=mode,
        actor=actor,
        failure=record.failure,
    )
    out.commands.append(
        RecoveryRequest(
            request_id=started.event_id,
            connector_id=record.connector_id,
            tenant_id=started.tenant_id,
            incident_id=record.incident_id,
            attempt=attempt,
            mode=mode,
            actor=actor,
            requested_at=started.occurred_at,
            deadline=deadline,
        )
    )


def _complete(out: _Emitter, at: int) -> None:
    """Rule 4: recovery is confirmed by a healthy ping, never by the action."""
    record = out.record
    detected_at = record.detected_at if record.detected_at is not None else at
    recovered_at = max(at, record.last_occurred_at)
    mode = record.attempt_mode or RecoveryMode.AUTO
    receipt = RecoveryCompleted(
        connector_id=record.connector_id,
        failure=record.failure or FailureCause.UNKNOWN,
        retries=record.attempts,
        status="recovered",
        timestamp=recovered_at,
        detected_at=detected_at,
        recovered_at=recovered_at,
        duration_ms=recovered_at - detected_at,
        mode=mode,
        actor=record.attempt_actor or "system",
        trigger="attempt" if record.attempts else "spontaneous",
        position_at_failure=record.position_at_failure,
        position_at_recovery=out.memory.last_position,
    )
    incident_open = record.incident_open
    completed = out.emit(
        receipt,
        at,
        attempt=record.attempt_in_flight,
        mode=mode,
        actor=record.attempt_actor,
        failure=record.failure,
    )
    if record.notify_at is None:  # else its failure was never paged: nor is this
        out.notify(completed, NotificationKind.RECOVERED, out.audiences())
    if incident_open:
        out.emit(
            IncidentResolved(reason="recovered", recovery_event_id=completed.event_id),
            at,
            incident_id=completed.incident_id,
            actor=record.attempt_actor,
        )


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def decide_ping(
    state: ConnectorState, ping: HealthPing, policy: Policy, source: str | None = None
) -> Decision | ConnectorState:
    """Judge one ping: the one path every ping takes, through `decide` or straight from a
    processor that keeps states in memory. `state` must be the ping's connector's.

    A ping older than the last one applied is counted and ignored (`late`). One that
    repeats a steady state changes nothing but the liveness: the result is then the new
    `ConnectorState` alone, with no `Decision` built and nothing to write (most pings take
    this path). Any other is judged in full."""
    last = state.last_checked_at
    if last is not None and ping.checked_at < last:
        memory = state.memory
        late = memory._replace(late_pings=memory.late_pings + 1)
        return Decision((), (), state._replace(memory=late), late=True)
    record, memory = state.record, state.memory
    rules = policy.for_connector(record.connector_id)
    if _repeats_steady_state(record, memory, ping, rules):
        checked_at = ping.checked_at
        liveness = (record, memory, checked_at, checked_at + rules.heartbeat_timeout_ms)
        return _tuple_new(ConnectorState, liveness)
    return _judge_ping(state, ping, policy, rules, source)


def _on_ping(
    state: ConnectorState, ping: HealthPing, policy: Policy, source: str | None
) -> Decision:
    judged = decide_ping(state, ping, policy, source)
    if isinstance(judged, ConnectorState):  # only the liveness moved
        return _tuple_new(Decision, ((), (), judged, False))
    return judged


def _repeats_steady_state(
    record: Record, memory: DetectorMemory, ping: HealthPing, rules: ConnectorPolicy
) -> bool:
    """The fast path's test: judging `ping` in full would change nothing but the liveness.

    That holds when the flap window is full of identical checks equal to this one (all
    healthy while OK, all unhealthy of the same failure at the threshold while FAILED), so
    `_remember` would rebuild the same memory and no rule fires. A property test checks that
    both paths decide the same."""
    if (
        memory.history_len != rules.flap_window
        or record.flapping
        or memory.tenant_id != ping.tenant_id
        or memory.last_position != ping.position
        or memory.last_retryable != ping.retryable
        or memory.dependency != ping.dependency
    ):
        return False
    if ping.status is _HEALTHY:
        return record.phase is Phase.OK and memory.history_bits == rules.steady_healthy_bits
    return (
        record.phase is Phase.FAILED
        and memory.history_bits == 0
        and memory.consecutive_unhealthy == rules.failure_threshold
        and memory.last_failure == (ping.failure or FailureCause.UNKNOWN)
    )


def _judge_ping(
    state: ConnectorState,
    ping: HealthPing,
    policy: Policy,
    rules: ConnectorPolicy,
    source: str | None,
) -> Decision:
    """The slow path: every rule a ping can fire (the fast path skips this only when it
    would change nothing but the liveness). `rules` are the policy's for this connector."""
    record = state.record
    if record.phase is Phase.RETIRED:
        ignored = state.memory._replace(ignored_pings=state.memory.ignored_pings + 1)
        return Decision((), (), state._replace(memory=ignored))
    memory = _remember(state.memory, ping, rules)
    heartbeat_deadline = ping.checked_at + rules.heartbeat_timeout_ms
    out = _Emitter(
        ConnectorState(record, memory, ping.checked_at, heartbeat_deadline), policy, source
    )
    ratio = flapping.state_change_ratio(memory.history_bits, memory.history_len, rules.flap_window)
    if record.flapping or ratio > rules.flap_high:
        _judge_flapping(out, ping, ratio)
    else:
        _judge_health(out, ping, memory)
    return out.decision()


def _remember(memory: DetectorMemory, ping: HealthPing, rules: ConnectorPolicy) -> DetectorMemory:
    """The detector memory after `ping`: debounce counter, flap window, last failure."""
    healthy = ping.status is _HEALTHY
    bits, length = flapping.push(
        memory.history_bits, memory.history_len, healthy, rules.flap_window
    )
    if healthy:
        consecutive, first_failing_at = 0, None
    else:
        consecutive = min(memory.consecutive_unhealthy + 1, rules.failure_threshold)
        still_failing = memory.consecutive_unhealthy > 0 and memory.first_failing_at is not None
        first_failing_at = memory.first_failing_at if still_failing else ping.checked_at
    return DetectorMemory(
        tenant_id=ping.tenant_id,
        watched=True,
        consecutive_unhealthy=consecutive,
        first_failing_at=first_failing_at,
        last_failure=None if healthy else (ping.failure or FailureCause.UNKNOWN),
        last_retryable=ping.retryable,
        last_position=ping.position,
        history_bits=bits,
        history_len=length,
        late_pings=memory.late_pings,
        ignored_pings=memory.ignored_pings,
        dependency=ping.dependency,
    )


def _judge_flapping(out: _Emitter, ping: HealthPing, ratio: float) -> None:
    """Rule 2: flapping, with hysteresis. One episode carries the whole flapping period."""
    at = ping.checked_at
    rules = out.rules
    if not out.record.flapping:
        if out.record.phase is Phase.OK:
            _detect_flapping(out, at)
        started = out.emit(FlappingStarted(ratio, rules.flap_high), at, failure=out.record.failure)
        out.notify(started, NotificationKind.FLAPPING_STARTED, out.audiences(tenant=False))
    elif ratio < rules.flap_low:
        _stop_flapping(out, at, ratio, ping.status is _HEALTHY)


def _judge_health(out: _Emitter, ping: HealthPing, memory: DetectorMemory) -> None:
    """Rule 4 (a healthy ping completes a recovery) and rule 1 (enough unhealthy ones in a
    row detect a failure)."""
    at = ping.checked_at
    phase = out.record.phase
    if ping.status is _HEALTHY:
        if phase is Phase.FAILED:
            _complete(out, at)
    elif phase is Phase.OK and memory.consecutive_unhealthy >= out.rules.failure_threshold:
        _detect(
            out,
            at,
            ping.failure or FailureCause.UNKNOWN,
            ping.retryable,
            memory.first_failing_at or at,
        )


def _detect_flapping(out: _Emitter, at: int) -> None:
    """A flapping connector gets one episode; alerts per ping are suppressed."""
    _supersede_open_incident(out, at)
    record = out.record
    out.emit(
        FailureDetected(retryable=True, first_failing_at=at, policy_sha256=out.rules.sha256),
        at,
        incident_id=f"{record.connector_id}:{record.sequence + 1}",
        failure=FailureCause.FLAPPING,
    )


def _stop_flapping(out: _Emitter, at: int, ratio: float, healthy: bool) -> None:
    record = out.record
    next_attempt_at = None
    if not healthy and record.retryable:
        assert record.incident_id is not None  # noqa: S101 - flapping implies an episode
        next_attempt_at = _next_attempt_at(out, at, record.incident_id, record.auto_attempts)
    stopped = out.emit(
        FlappingStopped(ratio, out.rules.flap_low, next_attempt_at), at, failure=record.failure
    )
    out.notify(stopped, NotificationKind.FLAPPING_STOPPED, out.audiences(tenant=False))
    if healthy:
        _complete(out, at)
    elif next_attempt_at is None:
        if record.retryable:
            _exhausted(out, at)
        else:
            _open_incident(out, at, OpenReason.NON_RETRYABLE)


def _on_tick(state: ConnectorState, tick: Tick, policy: Policy, source: str | None) -> Decision:
    out = _Emitter(state, policy, source)
    for _ in range(_MAX_DEADLINES_PER_TICK):
        due = next_deadline(out.record, out.heartbeat_deadline)
        if due is None or due[0] > tick.now:
            return out.decision()
        at, kind = due
        match kind:
            case DeadlineKind.HEARTBEAT:
                out.heartbeat_deadline = None
                last_alive = out.last_checked_at if out.last_checked_at is not None else at
                _detect(out, at, FailureCause.HEARTBEAT_MISSED, True, last_alive)
            case DeadlineKind.ATTEMPT:
                _start_attempt(out, at, RecoveryMode.AUTO, None)
            case DeadlineKind.ATTEMPT_TIMEOUT:
                _attempt_failed(out, at, "attempt_timeout")
            case DeadlineKind.ESCALATION:
                level = out.record.next_escalation_level
                assert level is not None  # noqa: S101 - paired with next_escalation_at
                _escalate(out, at, level, EscalationReason.UNACKNOWLEDGED)
            case DeadlineKind.NOTIFY:
                _release_held_page(out, at)
            case _:
                assert_never(kind)
    raise DeciderError(f"more than {_MAX_DEADLINES_PER_TICK} deadlines fired in one tick")


def _release_held_page(out: _Emitter, at: int) -> None:
    """No outage linked the failure within the group wait: its own page goes out."""
    audiences = out.audiences()
    released = out.emit(
        NotificationReleased(
            NotificationKind.FAILURE_DETECTED,
            ",".join(target for target, _ in audiences),
            out.policy.outages.group_wait_ms,
        ),
        at,
        failure=out.record.failure,
    )
    out.notify(released, NotificationKind.FAILURE_DETECTED, audiences)


def next_deadline(
    record: Record, heartbeat_deadline: int | None
) -> tuple[int, DeadlineKind] | None:
    """The earliest deadline the connector waits for, and its kind."""
    phase = record.phase
    if phase is Phase.OK and not record.incident_open:  # nearly every connector, nearly always
        return None if heartbeat_deadline is None else (heartbeat_deadline, _HEARTBEAT)
    candidates: list[tuple[int, DeadlineKind]] = []
    if phase is Phase.OK and heartbeat_deadline is not None:
        candidates.append((heartbeat_deadline, _HEARTBEAT))
    if phase is Phase.FAILED and record.notify_at is not None:
        candidates.append((record.notify_at, DeadlineKind.NOTIFY))
    if phase is Phase.FAILED and not record.flapping:
        if record.next_attempt_at is not None:
            candidates.append((record.next_attempt_at, DeadlineKind.ATTEMPT))
        if record.attempt_deadline is not None:
            candidates.append((record.attempt_deadline, DeadlineKind.ATTEMPT_TIMEOUT))
    if record.incident_open and record.next_escalation_at is not None:
        candidates.append((record.next_escalation_at, DeadlineKind.ESCALATION))
    return min(candidates) if candidates else None


def _on_watch(state: ConnectorState, watch: Watch, policy: Policy, _source: str | None) -> Decision:
    memory = state.memory
    if state.record.phase is Phase.RETIRED:
        return Decision((), (), state)
    grace = watch.at + policy.for_connector(state.record.connector_id).heartbeat_timeout_ms
    deadline = max(state.heartbeat_deadline or 0, grace)
    watched = memory._replace(watched=True, tenant_id=memory.tenant_id or watch.tenant_id)
    return Decision((), (), state._replace(memory=watched, heartbeat_deadline=deadline))


def _on_recovery_result(
    state: ConnectorState, result: RecoveryResult, policy: Policy, source: str | None
) -> Decision:
    record = state.record
    current = (
        record.phase is Phase.FAILED
        and record.incident_id == result.incident_id
        and record.attempt_in_flight == result.attempt
    )
    if not current:
        return Decision((), (), state)  # a result for an attempt already judged
    out = _Emitter(state, policy, source)
    if result.ok:
        out.emit(
            RecoveryActionAccepted(result.request_id, result.detail or ""),
            result.finished_at,
            attempt=result.attempt,
            mode=record.attempt_mode,
        )
    else:
        _attempt_failed(out, result.finished_at, f"action_failed: {result.detail or 'error'}")
    return out.decision()


def _on_notification_result(
    state: ConnectorState, result: NotificationResult, policy: Policy, source: str | None
) -> Decision:
    record = state.record
    if result.incident_id == record.incident_id and result.dedup_key in record.notified:
        return Decision((), (), state)  # a re-delivered result
    out = _Emitter(state, policy, source)
    outcome = NotificationSent if result.delivered else NotificationFailed
    out.emit(
        outcome(result.dedup_key, result.target, result.level, result.detail or None),
        result.finished_at,
        incident_id=result.incident_id,
    )
    # A failed delivery escalates even when the connector has recovered since: somebody who
    # should have been told was not (spec: "Notification failure: incident escalated").
    if result.delivered or result.incident_id != record.incident_id:
        return out.decision()
    at = result.finished_at
    if result.level == TENANT_LEVEL:
        # Escalation levels never go down: once the incident is above the Platform Admin's
        # level, somebody above them holds it, and the failure stands recorded above.
        if not record.tenant_escalated and record.escalation_level <= 0:
            _open_incident(out, at, OpenReason.TENANT_NOTIFICATION_FAILED)
            _escalate(out, at, 0, EscalationReason.TENANT_NOTIFICATION_FAILED)
    else:
        next_level = result.level + 1
        if next_level <= len(policy.escalation) and next_level > out.record.escalation_level:
            _open_incident(out, at, OpenReason.NOTIFICATION_FAILED)
            _escalate(out, at, next_level, EscalationReason.NOTIFICATION_FAILED)
    return out.decision()


def _on_admin(
    state: ConnectorState, command: AdminCommand, policy: Policy, source: str | None
) -> Decision:
    out = _Emitter(state, policy, source)
    record = out.record
    at = command.issued_at
    command_id, reason = command.command_id, command.reason or None

    def reject(why: str) -> Decision:
        out.emit(
            CommandRejected(command_id, command.action.value, why, reason),
            at,
            incident_id=command.incident_id,
            actor=command.actor,
        )
        return out.decision()

    if not policy.may_act(command.actor):
        return reject(f"actor {command.actor!r} is not in the policy's admins")
    if not state.known:
        return reject(f"unknown connector {record.connector_id!r}")
    if record.phase is Phase.RETIRED:
        return reject(f"connector {record.connector_id!r} is retired")

    action = command.action
    match action:
        case AdminAction.ACKNOWLEDGE | AdminAction.RESOLVE:
            if command.incident_id is None:
                return reject("an incident id is required")
            if command.incident_id != record.incident_id or not record.incident_open:
                return reject(f"incident {command.incident_id!r} is not open")
            if action is AdminAction.ACKNOWLEDGE:
                if record.acknowledged:
                    return reject(f"incident {command.incident_id!r} is already acknowledged")
                out.emit(IncidentAcknowledged(command_id, reason), at, actor=command.actor)
            else:
                out.emit(IncidentResolved("manual", reason, command_id), at, actor=command.actor)
        case AdminAction.RECOVER:
            if record.phase is not Phase.FAILED:
                return reject(f"connector {record.connector_id!r} is not failed")
            if record.attempt_in_flight is not None:
                return reject(
                    f"attempt {record.attempt_in_flight} is in flight until "
                    f"{iso_from_ms(record.attempt_deadline or at)}"
                )
            _start_attempt(out, at, RecoveryMode.MANUAL, command.actor, command)
        case AdminAction.SILENCE:
            if command.until is None or command.until <= at:
                return reject("silence needs an 'until' later than the command")
            out.emit(Silenced(command_id, command.until, reason), at, actor=command.actor)
        case AdminAction.RETIRE:
            if record.incident_open:
                out.emit(IncidentResolved("retired", reason, command_id), at, actor=command.actor)
            out.emit(Retired(command_id, reason), at, actor=command.actor)
        case _:
            assert_never(action)
    return out.decision()


def _on_outage_notice(
    state: ConnectorState, notice: OutageNotice, policy: Policy, source: str | None
) -> Decision:
    """The outage of the connector's group holds its failure episode: recorded on the
    connector's own chain, so its evidence says why its pages go through the outage. A
    notice for an episode that has ended (or was linked already) changes nothing."""
    record = state.record
    if record.phase is not Phase.FAILED or record.incident_id != notice.incident_id:
        return Decision((), (), state)
    if notice.role is OutageRole.RELEASED:
        if not record.restarts_held or record.outage_id != notice.outage_id:
            return Decision((), (), state)
        return _released(state, notice, policy, source)
    if record.outage_id == notice.outage_id:
        return Decision((), (), state)
    out = _Emitter(state, policy, source)
    held = notice.role is OutageRole.HELD or None
    linked = out.emit(OutageLinked(notice.outage_id, notice.group, held), notice.at)
    if record.notify_at is not None:  # its page was held for this: the outage pages instead
        out.suppress_for_outage(
            NotificationKind.FAILURE_DETECTED,
            out.audiences(),
            linked.occurred_at,
            notice.outage_id,
        )
    return out.decision()


def _released(
    state: ConnectorState, notice: OutageNotice, policy: Policy, source: str | None
) -> Decision:
    """The outage released the held restarts of the episode: the next automatic attempt
    is at the notice's time (the outage paces the releases), unless one is in flight or
    the retries are used up (then an incident opens, as it would have)."""
    record = state.record
    out = _Emitter(state, policy, source)
    at = max(notice.at, record.last_occurred_at)
    in_flight = record.attempt_in_flight is not None
    exhausted = record.auto_attempts >= out.rules.max_retries
    next_attempt_at = None if in_flight or exhausted else at
    out.emit(OutageReleased(notice.outage_id, next_attempt_at), at, failure=record.failure)
    if exhausted and not in_flight:
        _exhausted(out, at)
    return out.decision()


def decide(
    state: ConnectorState,
    message: DeciderInput,
    policy: Policy,
    source: str | None = None,
) -> Decision:
    """Judge one input. `source` (topic/partition/offset of the input) is recorded in every
    event it causes, so a crashed step can be matched with its outputs."""
    handler = HANDLERS.get(type(message))
    if handler is None:
        raise TypeError(f"unknown decider input {type(message).__name__}")
    if message.connector_id != state.record.connector_id:
        raise DeciderError(
            f"input for {message.connector_id!r} given to state of {state.record.connector_id!r}"
        )
    return handler(state, message, policy, source)


# A table, not a match: one dict lookup is cheaper than a chain of class patterns on the
# path every ping takes. mypy checks each handler against the input type it is filed under;
# tests/core/test_rules.py checks there is one per member of DeciderInput.
_Handler = Callable[[ConnectorState, Any, Policy, str | None], Decision]
_Input = TypeVar("_Input", bound=DeciderInput)


def _entry(
    kind: type[_Input], handler: Callable[[ConnectorState, _Input, Policy, str | None], Decision]
) -> tuple[type, _Handler]:
    return kind, handler


HANDLERS: dict[type, _Handler] = dict(
    [
        _entry(HealthPing, _on_ping),
        _entry(Tick, _on_tick),
        _entry(Watch, _on_watch),
        _entry(AdminCommand, _on_admin),
        _entry(RecoveryResult, _on_recovery_result),
        _entry(NotificationResult, _on_notification_result),
        _entry(OutageNotice, _on_outage_notice),
    ]
)
