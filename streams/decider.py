"""`decide(state, input) -> Decision`: every rule of connector recovery, in one place.

The decider emits audit events through an `_Emitter` that chains them (sequence, prev_hash,
hash) and folds each through `evolve` as it goes, so the record it returns is by
construction the fold of the events it emitted. Commands (recovery and notification
requests) are emitted beside the event that causes them and carry its id.

Rule numbers in comments refer to the core issue's behaviour list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, assert_never

from streams import flapping
from streams.backoff import backoff_delay_ms
from streams.chain import chain_hash
from streams.evolve import evolve
from streams.models import (
    AdminAction,
    AdminCommand,
    AuditEvent,
    Command,
    DeciderInput,
    EventType,
    HealthPing,
    HealthStatus,
    NotificationRequest,
    NotificationResult,
    RecoveryMode,
    RecoveryRequest,
    RecoveryResult,
    Tick,
    Watch,
)
from streams.policy import Policy
from streams.state import ConnectorState, DetectorMemory, Phase, Record
from streams.timefmt import iso_from_ms

PLATFORM_ADMIN = "platform_admin"
TENANT_LEVEL = -1
# Reasons that open an incident without notifying on their own: the escalation event that
# follows carries the notification.
_SILENT_OPEN_REASONS = frozenset({"tenant_notification_failed", "notification_failed"})
_MAX_DEADLINES_PER_TICK = 10_000
_HEALTHY = HealthStatus.HEALTHY


class DeciderError(RuntimeError):
    """An input the decider cannot judge (a bug in the shell, never bad user data)."""


class Decision(NamedTuple):
    """What one input caused. A NamedTuple: built for every input, so it must be cheap."""

    events: tuple[AuditEvent, ...]
    commands: tuple[Command, ...]
    state: ConnectorState
    late: bool = False


# The hot path builds its tuples without the generated keyword/default handling.
_liveness = ConnectorState._make


def _steady(events: tuple[()], commands: tuple[()], state: ConnectorState) -> Decision:
    return tuple.__new__(Decision, (events, commands, state, False))


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
        kind: EventType,
        at: int,
        *,
        incident_id: str | None = None,
        attempt: int | None = None,
        mode: RecoveryMode | None = None,
        actor: str | None = None,
        failure: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> AuditEvent:
        record = self.record
        sequence = record.sequence + 1
        attrs = dict(attributes or {})
        if self.source is not None:
            attrs["source"] = self.source
            attrs["source_index"] = str(len(self.events))
        fields: dict[str, Any] = {
            "event_id": f"{record.connector_id}:{sequence}",
            "type": kind,
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
    def notify(self, cause: AuditEvent, kind: str, audiences: list[tuple[str, int]]) -> None:
        incident_id = cause.incident_id or cause.event_id
        silenced = self.record.silenced_until
        if silenced is not None and silenced > cause.occurred_at:
            self.emit(
                EventType.NOTIFICATION_SUPPRESSED,
                cause.occurred_at,
                incident_id=incident_id,
                attributes={
                    "notification_kind": kind,
                    "targets": ",".join(target for target, _ in audiences),
                    "reason": "silenced",
                    "silenced_until": iso_from_ms(silenced),
                },
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


def _summary(kind: str, event: AuditEvent) -> str:
    what = {
        "failure_detected": f"failed ({event.failure})",
        "recovered": "recovered",
        "incident_opened": "needs a human: incident opened",
        "incident_escalated": "incident escalated",
        "flapping_started": "is flapping",
        "flapping_stopped": "stopped flapping",
    }.get(kind, kind)
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
            EventType.INCIDENT_RESOLVED,
            at,
            attributes={"resolution": "superseded", "reason": "a new failure episode began"},
        )


def _detect(out: _Emitter, at: int, failure: str, retryable: bool, first_failing_at: int) -> None:
    """Rule 1 (+3, 5, 6): open a failure episode and decide what comes next."""
    _supersede_open_incident(out, at)
    rules = out.rules
    sequence = out.record.sequence + 1
    incident_id = f"{out.record.connector_id}:{sequence}"
    attrs = {
        "retryable": "true" if retryable else "false",
        "first_failing_at": iso_from_ms(min(first_failing_at, at)),
        "policy_sha256": rules.sha256,
    }
    if out.memory.last_position is not None:
        attrs["position"] = out.memory.last_position
    will_retry = retryable and rules.max_retries > 0
    if will_retry:
        delay = backoff_delay_ms(rules.backoff, out.record.connector_id, incident_id, 1)
        attrs["next_attempt_at"] = iso_from_ms(max(at, out.record.last_occurred_at) + delay)
    detected = out.emit(
        EventType.FAILURE_DETECTED, at, incident_id=incident_id, failure=failure, attributes=attrs
    )
    out.notify(detected, "failure_detected", out.audiences())
    if not retryable:
        _open_incident(out, detected.occurred_at, "non_retryable")
    elif not will_retry:
        _exhausted(out, detected.occurred_at)


def _exhausted(out: _Emitter, at: int) -> None:
    """Rule 5."""
    out.emit(
        EventType.RETRIES_EXHAUSTED,
        at,
        failure=out.record.failure,
        attributes={"max_retries": str(out.rules.max_retries)},
    )
    _open_incident(out, at, "retries_exhausted")


def _open_incident(out: _Emitter, at: int, reason: str) -> None:
    if out.record.incident_open:
        return
    silent = reason in _SILENT_OPEN_REASONS
    attrs = {"reason": reason, "level": "-1" if silent else "0"}
    _schedule_escalation(out, attrs, from_level=0, opened_at=max(at, out.record.last_occurred_at))
    opened = out.emit(EventType.INCIDENT_OPENED, at, failure=out.record.failure, attributes=attrs)
    if not silent:
        out.notify(opened, "incident_opened", out.audiences())


def _schedule_escalation(
    out: _Emitter, attrs: dict[str, str], *, from_level: int, opened_at: int
) -> None:
    """Rule 8: the next escalation step after `from_level`, timed from the incident's opening."""
    next_level = from_level + 1
    after_ms = out.policy.escalation_after_ms(next_level - 1)
    if after_ms is not None:
        attrs["next_escalation_level"] = str(next_level)
        attrs["next_escalation_at"] = iso_from_ms(opened_at + after_ms)


def _escalate(out: _Emitter, at: int, level: int, reason: str) -> None:
    record = out.record
    attrs = {"level": str(level), "target": escalation_target(level), "reason": reason}
    opened_at = record.incident_opened_at if record.incident_opened_at is not None else at
    _schedule_escalation(out, attrs, from_level=level, opened_at=opened_at)
    if record.next_escalation_level is not None and record.next_escalation_level > level:
        # A timer step beyond this level is still pending: keep it.
        attrs["next_escalation_level"] = str(record.next_escalation_level)
        attrs["next_escalation_at"] = iso_from_ms(record.next_escalation_at or at)
    if record.acknowledged:
        attrs.pop("next_escalation_level", None)
        attrs.pop("next_escalation_at", None)
    escalated = out.emit(EventType.INCIDENT_ESCALATED, at, attributes=attrs)
    out.notify(escalated, "incident_escalated", [(escalation_target(level), level)])


def _attempt_failed(out: _Emitter, at: int, reason: str) -> None:
    """Rule 3/5: an attempt failed; schedule the next one or hand over to a human."""
    record = out.record
    manual = record.attempt_mode is RecoveryMode.MANUAL
    attrs = {"reason": reason}
    retry_next = not manual and record.auto_attempts < out.rules.max_retries
    if retry_next:
        assert record.incident_id is not None  # noqa: S101 - an attempt implies an episode
        delay = backoff_delay_ms(
            out.rules.backoff, record.connector_id, record.incident_id, record.auto_attempts + 1
        )
        attrs["next_attempt_at"] = iso_from_ms(max(at, record.last_occurred_at) + delay)
    failed = out.emit(
        EventType.RECOVERY_FAILED,
        at,
        attempt=record.attempt_in_flight,
        mode=record.attempt_mode,
        actor=record.attempt_actor,
        failure=record.failure,
        attributes=attrs,
    )
    if retry_next:
        return
    if manual:
        _open_incident(out, failed.occurred_at, "manual_recovery_failed")
    else:
        _exhausted(out, failed.occurred_at)


def _start_attempt(
    out: _Emitter,
    at: int,
    mode: RecoveryMode,
    actor: str | None,
    command_attrs: dict[str, str] | None = None,
) -> None:
    """Rule 3 (AUTO) and rule 7 (MANUAL; `command_attrs` carry the command's id and reason)."""
    record = out.record
    assert record.incident_id is not None  # noqa: S101 - only called inside an episode
    attempt = record.attempts + 1
    start = max(at, record.last_occurred_at)
    deadline = start + out.rules.attempt_timeout_ms
    attrs = {"deadline": iso_from_ms(deadline), "action": out.rules.recovery_action.type}
    attrs.update(command_attrs or {})
    started = out.emit(
        EventType.RECOVERY_STARTED,
        at,
        attempt=attempt,
        mode=mode,
        actor=actor,
        failure=record.failure,
        attributes=attrs,
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
    receipt = {
        "connector_id": record.connector_id,
        "failure": record.failure or "unknown",
        "retries": str(record.attempts),
        "status": "recovered",
        "timestamp": iso_from_ms(recovered_at),
        "detected_at": iso_from_ms(detected_at),
        "recovered_at": iso_from_ms(recovered_at),
        "duration_ms": str(recovered_at - detected_at),
        "mode": mode.value,
        "actor": record.attempt_actor or "system",
        "trigger": "attempt" if record.attempts else "spontaneous",
    }
    if record.position_at_failure is not None:
        receipt["position_at_failure"] = record.position_at_failure
    if out.memory.last_position is not None:
        receipt["position_at_recovery"] = out.memory.last_position
    incident_open = record.incident_open
    completed = out.emit(
        EventType.RECOVERY_COMPLETED,
        at,
        attempt=record.attempt_in_flight,
        mode=mode,
        actor=record.attempt_actor,
        failure=record.failure,
        attributes=receipt,
    )
    out.notify(completed, "recovered", out.audiences())
    if incident_open:
        out.emit(
            EventType.INCIDENT_RESOLVED,
            at,
            incident_id=completed.incident_id,
            actor=record.attempt_actor,
            attributes={"reason": "recovered", "recovery_event_id": completed.event_id},
        )


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _on_ping(
    state: ConnectorState, ping: HealthPing, policy: Policy, source: str | None
) -> Decision:
    record, memory = state.record, state.memory
    rules = policy.for_connector(record.connector_id)
    healthy = ping.status is _HEALTHY
    checked_at = ping.checked_at
    last = state.last_checked_at
    if last is not None and checked_at < last:
        late = memory._replace(late_pings=memory.late_pings + 1)
        return Decision((), (), state._replace(memory=late), late=True)
    window = rules.flap_window
    heartbeat_deadline = checked_at + rules.heartbeat_timeout_ms
    # Fast path: a ping that repeats a steady state (healthy and OK, or unhealthy and
    # already failed, with a flap window of identical checks) changes only the liveness.
    if (
        memory.history_len == window
        and not record.flapping
        and memory.tenant_id == ping.tenant_id
        and memory.last_position == ping.position
        and (
            (
                healthy
                and record.phase is Phase.OK
                and memory.history_bits == rules.steady_healthy_bits
            )
            or (
                not healthy
                and record.phase is Phase.FAILED
                and memory.history_bits == 0
                and memory.consecutive_unhealthy == rules.failure_threshold
                and memory.last_failure == (ping.failure or "unknown")
                and memory.last_retryable == ping.retryable
            )
        )
    ):
        return _steady((), (), _liveness((record, memory, checked_at, heartbeat_deadline)))
    if record.phase is Phase.RETIRED:
        ignored = memory._replace(ignored_pings=memory.ignored_pings + 1)
        return Decision((), (), state._replace(memory=ignored))

    bits, length = flapping.push(memory.history_bits, memory.history_len, healthy, window)
    consecutive = 0 if healthy else min(memory.consecutive_unhealthy + 1, rules.failure_threshold)
    if healthy:
        first_failing_at = None
    elif memory.consecutive_unhealthy > 0 and memory.first_failing_at is not None:
        first_failing_at = memory.first_failing_at
    else:
        first_failing_at = ping.checked_at
    memory = DetectorMemory(
        tenant_id=ping.tenant_id,
        watched=True,
        consecutive_unhealthy=consecutive,
        first_failing_at=first_failing_at,
        last_failure=None if healthy else (ping.failure or "unknown"),
        last_retryable=ping.retryable,
        last_position=ping.position,
        history_bits=bits,
        history_len=length,
        late_pings=memory.late_pings,
        ignored_pings=memory.ignored_pings,
    )
    out = _Emitter(
        ConnectorState(record, memory, ping.checked_at, heartbeat_deadline), policy, source
    )
    at = ping.checked_at

    # Rule 2: flapping, with hysteresis.
    ratio = flapping.state_change_ratio(bits, length, window)
    if not record.flapping and ratio > rules.flap_high:
        if out.record.phase is Phase.OK:
            _detect_flapping(out, at)
        started = out.emit(
            EventType.FLAPPING_STARTED,
            at,
            failure=out.record.failure,
            attributes={"state_change": f"{ratio:.3f}", "threshold": str(rules.flap_high)},
        )
        out.notify(started, "flapping_started", out.audiences(tenant=False))
        return out.decision()
    if record.flapping:
        if ratio >= rules.flap_low:
            return out.decision()  # one episode carries the whole flapping period
        _stop_flapping(out, at, ratio, healthy)
        return out.decision()

    if healthy:
        if out.record.phase is Phase.FAILED:
            _complete(out, at)
    elif out.record.phase is Phase.OK and consecutive >= rules.failure_threshold:
        _detect(
            out,
            at,
            ping.failure or "unknown",
            ping.retryable,
            memory.first_failing_at or at,
        )
    return out.decision()


def _detect_flapping(out: _Emitter, at: int) -> None:
    """A flapping connector gets one episode; alerts per ping are suppressed."""
    _supersede_open_incident(out, at)
    record = out.record
    incident_id = f"{record.connector_id}:{record.sequence + 1}"
    attrs = {
        "retryable": "true",
        "first_failing_at": iso_from_ms(at),
        "policy_sha256": out.rules.sha256,
    }
    out.emit(
        EventType.FAILURE_DETECTED,
        at,
        incident_id=incident_id,
        failure="flapping",
        attributes=attrs,
    )


def _stop_flapping(out: _Emitter, at: int, ratio: float, healthy: bool) -> None:
    record = out.record
    attrs = {"state_change": f"{ratio:.3f}", "threshold": str(out.rules.flap_low)}
    resume_retries = (
        not healthy and record.retryable and (record.auto_attempts < out.rules.max_retries)
    )
    if resume_retries:
        assert record.incident_id is not None  # noqa: S101 - flapping implies an episode
        delay = backoff_delay_ms(
            out.rules.backoff, record.connector_id, record.incident_id, record.auto_attempts + 1
        )
        attrs["next_attempt_at"] = iso_from_ms(max(at, record.last_occurred_at) + delay)
    stopped = out.emit(EventType.FLAPPING_STOPPED, at, failure=record.failure, attributes=attrs)
    out.notify(stopped, "flapping_stopped", out.audiences(tenant=False))
    if healthy:
        _complete(out, at)
    elif not resume_retries:
        if record.retryable:
            _exhausted(out, at)
        else:
            _open_incident(out, at, "non_retryable")


def _on_tick(state: ConnectorState, tick: Tick, policy: Policy, source: str | None) -> Decision:
    out = _Emitter(state, policy, source)
    for _ in range(_MAX_DEADLINES_PER_TICK):
        due = next_deadline(out.record, out.heartbeat_deadline)
        if due is None or due[0] > tick.now:
            return out.decision()
        at, what = due
        if what == "heartbeat":
            out.heartbeat_deadline = None
            last_alive = out.last_checked_at if out.last_checked_at is not None else at
            _detect(out, at, "heartbeat_missed", True, last_alive)
        elif what == "attempt":
            _start_attempt(out, at, RecoveryMode.AUTO, None)
        elif what == "attempt_timeout":
            _attempt_failed(out, at, "attempt_timeout")
        elif what == "escalation":
            level = out.record.next_escalation_level
            assert level is not None  # noqa: S101 - paired with next_escalation_at
            _escalate(out, at, level, "unacknowledged")
        else:
            raise DeciderError(f"unknown deadline kind {what!r}")
    raise DeciderError(f"more than {_MAX_DEADLINES_PER_TICK} deadlines fired in one tick")


def next_deadline(record: Record, heartbeat_deadline: int | None) -> tuple[int, str] | None:
    """The earliest deadline the connector waits for, and its kind."""
    candidates: list[tuple[int, str]] = []
    if record.phase is Phase.OK and heartbeat_deadline is not None:
        candidates.append((heartbeat_deadline, "heartbeat"))
    if record.phase is Phase.FAILED and not record.flapping:
        if record.next_attempt_at is not None:
            candidates.append((record.next_attempt_at, "attempt"))
        if record.attempt_deadline is not None:
            candidates.append((record.attempt_deadline, "attempt_timeout"))
    if record.incident_open and record.next_escalation_at is not None:
        candidates.append((record.next_escalation_at, "escalation"))
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
            EventType.RECOVERY_ACTION_ACCEPTED,
            result.finished_at,
            attempt=result.attempt,
            mode=record.attempt_mode,
            attributes={"request_id": result.request_id, "detail": result.detail or ""},
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
    attrs = {
        "dedup_key": result.dedup_key,
        "target": result.target,
        "level": str(result.level),
    }
    if result.detail:
        attrs["detail"] = result.detail
    kind = EventType.NOTIFICATION_SENT if result.delivered else EventType.NOTIFICATION_FAILED
    out.emit(kind, result.finished_at, incident_id=result.incident_id, attributes=attrs)
    # A failed delivery escalates even when the connector has recovered since: somebody who
    # should have been told was not (spec: "Notification failure: incident escalated").
    if result.delivered or result.incident_id != record.incident_id:
        return out.decision()
    at = result.finished_at
    if result.level == TENANT_LEVEL:
        if not record.tenant_escalated:
            _open_incident(out, at, "tenant_notification_failed")
            _escalate(out, at, 0, "tenant_notification_failed")
    else:
        next_level = result.level + 1
        if next_level <= len(policy.escalation) and next_level > out.record.escalation_level:
            _open_incident(out, at, "notification_failed")
            _escalate(out, at, next_level, "notification_failed")
    return out.decision()


def _on_admin(
    state: ConnectorState, command: AdminCommand, policy: Policy, source: str | None
) -> Decision:
    out = _Emitter(state, policy, source)
    record = out.record
    at = command.issued_at
    base = {"command_id": command.command_id}
    if command.reason:
        base["reason"] = command.reason

    def reject(why: str) -> Decision:
        out.emit(
            EventType.COMMAND_REJECTED,
            at,
            incident_id=command.incident_id,
            actor=command.actor,
            attributes={**base, "action": command.action.value, "rejection": why},
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
                out.emit(EventType.INCIDENT_ACKNOWLEDGED, at, actor=command.actor, attributes=base)
            else:
                out.emit(
                    EventType.INCIDENT_RESOLVED,
                    at,
                    actor=command.actor,
                    attributes={**base, "resolution": "manual"},
                )
        case AdminAction.RECOVER:
            if record.phase is not Phase.FAILED:
                return reject(f"connector {record.connector_id!r} is not failed")
            if record.attempt_in_flight is not None:
                return reject(
                    f"attempt {record.attempt_in_flight} is in flight until "
                    f"{iso_from_ms(record.attempt_deadline or at)}"
                )
            _start_attempt(out, at, RecoveryMode.MANUAL, command.actor, base)
        case AdminAction.SILENCE:
            if command.until is None or command.until <= at:
                return reject("silence needs an 'until' later than the command")
            out.emit(
                EventType.SILENCED,
                at,
                actor=command.actor,
                attributes={**base, "until": iso_from_ms(command.until)},
            )
        case AdminAction.RETIRE:
            if record.incident_open:
                out.emit(
                    EventType.INCIDENT_RESOLVED,
                    at,
                    actor=command.actor,
                    attributes={**base, "resolution": "retired"},
                )
            out.emit(EventType.RETIRED, at, actor=command.actor, attributes=base)
        case _:
            assert_never(action)
    return out.decision()


def decide(
    state: ConnectorState,
    message: DeciderInput,
    policy: Policy,
    source: str | None = None,
) -> Decision:
    """Judge one input. `source` (topic/partition/offset of the input) is recorded in every
    event it causes, so a crashed step can be matched with its outputs."""
    handler = _HANDLERS.get(type(message))
    if handler is None:
        raise TypeError(f"unknown decider input {type(message).__name__}")
    if message.connector_id != state.record.connector_id:
        raise DeciderError(
            f"input for {message.connector_id!r} given to state of {state.record.connector_id!r}"
        )
    return handler(state, message, policy, source)


_HANDLERS: dict[type, Callable[[ConnectorState, Any, Policy, str | None], Decision]] = {
    HealthPing: _on_ping,
    Tick: _on_tick,
    Watch: _on_watch,
    AdminCommand: _on_admin,
    RecoveryResult: _on_recovery_result,
    NotificationResult: _on_notification_result,
}
