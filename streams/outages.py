"""Outages: the failing connectors of one group, as one keyed aggregate (docs/outages.md).

A connector's decider sees only its own connector. The failure episodes of a group are
brought together by `OutageSignal`s, derived from the connectors' audit events by
`member_signals`, and judged by `decide_outage` under the outage's own key
`outage:<group>`, on its own partition, in the order the signals arrive there:

* `OutageRecord`, the **state of record**: the chain head and the open outage with its
  members; exactly the fold of `evolve_outage` over the outage's audit events.
* `OutageMemory`, transient **detector memory** (like a connector's debounce counter): the
  failing members not (yet) in an outage, and the members of the open outage still failing.

Pure: no I/O, no clock (time is the signal's `at`, the connector event's `occurred_at`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, assert_never

from immutables import Map

from streams.chain import chain_hash
from streams.decider import PLATFORM_ADMIN, TENANT_LEVEL, escalation_target, tenant_target
from streams.evidence import (
    EVENT_TYPE,
    CommandRejected,
    FailureDetected,
    NotificationFailed,
    NotificationOutcome,
    NotificationSent,
    OutageAcknowledged,
    OutageJoined,
    OutageOpened,
    OutageRecoveryRequested,
    OutageResolved,
    Provenance,
    read,
)
from streams.evidence import write as evidence_map
from streams.evolve import evolve
from streams.grouping import is_tenant_group, outage_key
from streams.models import (
    GENESIS_HASH,
    OUTAGE_KEY_PREFIX,
    AdminAction,
    AdminCommand,
    AuditEvent,
    EventType,
    MemberChange,
    NotificationKind,
    NotificationRequest,
    NotificationResult,
    OutageNotice,
    OutageRole,
    OutageSignal,
    Tick,
    WorkerInput,
)
from streams.policy import Policy
from streams.state import Phase, Record

# A set of incident ids that an outage of thousands of members can grow one at a time:
# a persistent map (a HAMT, as `contextvars` uses), so adding a member costs O(log n), not
# a copy of every member (frozenset unions made a storm of 10,000 quadratic: 7.3 s).
Members = Map[str, bool]
NO_MEMBERS: Members = Map()


def members_of(incident_ids: Iterable[str]) -> Members:
    return Map(dict.fromkeys(incident_ids, True))


class OutageRecord(NamedTuple):
    outage_key: str  # outage:<group>, the chain's id
    tenant_id: str | None = None
    sequence: int = 0
    head_hash: str = GENESIS_HASH
    last_occurred_at: int = 0
    # The open outage (None when there is none).
    outage_id: str | None = None  # the event id of its outage.opened
    opened_at: int | None = None
    members: Members = NO_MEMBERS  # incident ids of the episodes in it
    outages: int = 0  # outages opened in this group so far
    tenants: tuple[str, ...] = ()  # of the open outage's members, each notified once
    notified: frozenset[str] = frozenset()  # dedup keys with an outcome, since the opening
    acknowledged_by: str | None = None  # the admin who acknowledged the open outage


class Pending(NamedTuple):
    """A failing member not in an outage."""

    connector_id: str
    incident_id: str
    detected_at: int
    tenant_id: str | None


class OutageMemory(NamedTuple):
    pending: tuple[Pending, ...] = ()  # in the order their failures arrived
    failing: Members = NO_MEMBERS  # incidents of the open outage still failing
    recovered: int = 0  # episodes of the open outage that recovered
    left: int = 0  # ... that ended without a recovery
    # The circuit breaker (when the policy hands restarts to outages): the one member
    # restarting on its own backoff while the others are held, and once a member has
    # recovered (the dependency answers), the held ones still to release, paced from
    # `release_from` at the policy's `release_per_s`.
    probe: str | None = None  # its incident id
    release_from: int | None = None
    releasing: tuple[str, ...] = ()  # incident ids, sorted: the order of release
    released: int = 0


class OutageState(NamedTuple):
    record: OutageRecord
    memory: OutageMemory = OutageMemory()

    @staticmethod
    def new(key: str) -> OutageState:
        return OutageState(OutageRecord(key))


class OutageDecision(NamedTuple):
    events: tuple[AuditEvent, ...]
    state: OutageState
    # inputs of member connectors: sent before `events`, as a connector's signals are
    notices: tuple[OutageNotice, ...] = ()
    # the outage's pages (when the policy pages by outage): sent before `events` too
    commands: tuple[NotificationRequest, ...] = ()
    # an admin's `recover` of the outage, one per member still failing: inputs of the
    # members, sent with the notices
    member_commands: tuple[AdminCommand, ...] = ()


# -- the signals ------------------------------------------------------------------------------


def member_signals(before: Record, events: Sequence[AuditEvent]) -> list[OutageSignal]:
    """The signals a connector's new `events` send to its outage group, given its record
    `before` them: a grouped episode detected, and its end (recovered, or closed without a
    recovery by an admin's resolve or retire)."""
    in_grouped_episode = before.phase is Phase.FAILED and before.outage_group is not None
    if not in_grouped_episode and all(e.type is not EventType.FAILURE_DETECTED for e in events):
        return []  # most decisions with events: nothing to fold again
    signals: list[OutageSignal] = []
    record = before
    for event in events:
        previous, record = record, evolve(record, event)
        if event.type is EventType.FAILURE_DETECTED:
            group = read(FailureDetected, event.attributes).group
            if group is not None and event.incident_id is not None:
                signals.append(_signal(event, group, event.incident_id, MemberChange.FAILED))
        elif (
            previous.phase is Phase.FAILED
            and record.phase is not Phase.FAILED
            and previous.outage_group is not None
            and previous.incident_id is not None
        ):
            change = (
                MemberChange.RECOVERED
                if event.type is EventType.RECOVERY_COMPLETED
                else MemberChange.LEFT
            )
            signals.append(_signal(event, previous.outage_group, previous.incident_id, change))
    return signals


def _signal(event: AuditEvent, group: str, incident_id: str, change: MemberChange) -> OutageSignal:
    return OutageSignal(
        connector_id=outage_key(group),
        group=group,
        member_id=event.connector_id,
        incident_id=incident_id,
        change=change,
        tenant_id=event.tenant_id,
        failure=event.failure,
        at=event.occurred_at,
    )


# -- deciding ---------------------------------------------------------------------------------


class _Emitter:
    """Chains the outage's events and folds each as it goes (as the connector decider's)."""

    def __init__(self, state: OutageState, source: str | None) -> None:
        self.record = state.record
        self.memory = state.memory
        self.source = source
        self.events: list[AuditEvent] = []
        self.notices: list[OutageNotice] = []
        self.commands: list[NotificationRequest] = []
        self.member_commands: list[AdminCommand] = []

    def page(
        self,
        cause: AuditEvent,
        kind: NotificationKind,
        target: str,
        level: int,
        summary: str,
        *,
        one_per_cause: bool = False,
    ) -> None:
        """One notification of the outage, to `target` (the Platform Admin, a tenant admin
        or an escalation step), through the notifier the connectors use. `one_per_cause`:
        its dedup key names the event that caused it, not only the outage: an outage can
        escalate to one target more than once (a failed page at its opening, another at its
        resolution), and each is a page of its own."""
        tenant_id = target.removeprefix("tenant:") if level == TENANT_LEVEL else cause.tenant_id
        incident_id = cause.incident_id or cause.event_id
        about = cause.event_id if one_per_cause else incident_id
        self.commands.append(
            NotificationRequest(
                dedup_key=f"{about}:{kind}:{target}",
                notification_kind=kind,
                target=target,
                level=level,
                connector_id=self.record.outage_key,
                tenant_id=tenant_id,
                incident_id=incident_id,
                failure=None,
                cause_event_id=cause.event_id,
                occurred_at=cause.occurred_at,
                summary=summary,
            )
        )

    def link(self, at: int, group: str, members: Iterable[tuple[str, str, OutageRole]]) -> None:
        """Tell each (connector, incident, role) of `members` the open outage holds its
        episode, in that role."""
        outage_id = self.record.outage_id
        assert outage_id is not None  # noqa: S101 - called after the event that opened it
        self.notices.extend(
            OutageNotice(
                connector_id=connector_id,
                outage_id=outage_id,
                group=group,
                incident_id=incident_id,
                role=role,
                at=at,
            )
            for connector_id, incident_id, role in members
        )

    def emit(
        self,
        evidence: OutageOpened
        | OutageJoined
        | OutageResolved
        | CommandRejected
        | NotificationSent
        | NotificationFailed
        | OutageAcknowledged
        | OutageRecoveryRequested,
        at: int,
        tenant_id: str | None,
        incident_id: str | None = None,
        actor: str | None = None,
    ) -> AuditEvent:
        record = self.record
        sequence = record.sequence + 1
        event_id = f"{record.outage_key}:{sequence}"
        attributes = evidence_map(evidence)
        if self.source is not None:
            attributes.update(evidence_map(Provenance(self.source, len(self.events))))
        fields: dict[str, Any] = {
            "event_id": event_id,
            "type": EVENT_TYPE[type(evidence)],
            "connector_id": record.outage_key,
            "tenant_id": tenant_id,
            "sequence": sequence,
            "occurred_at": max(at, record.last_occurred_at),
            # every event of one outage carries its id: the opening event's id
            "incident_id": incident_id or record.outage_id or event_id,
            "attempt": None,
            "mode": None,
            "actor": actor,
            "failure": None,
            "attributes": attributes,
            "prev_hash": record.head_hash,
        }
        event = AuditEvent.model_construct(**fields, hash=chain_hash(record.head_hash, fields))
        self.events.append(event)
        self.record = evolve_outage(record, event)
        return event

    def decision(self) -> OutageDecision:
        return OutageDecision(
            tuple(self.events),
            OutageState(self.record, self.memory),
            tuple(self.notices),
            tuple(self.commands),
            tuple(self.member_commands),
        )


def decide_outage(
    state: OutageState, signal: OutageSignal, policy: Policy, source: str | None = None
) -> OutageDecision:
    """Judge one member signal. A signal already applied (a re-derived one after a crash)
    changes nothing."""
    if signal.connector_id != state.record.outage_key:
        raise ValueError(
            f"signal for {signal.connector_id!r} given to outage {state.record.outage_key!r}"
        )
    out = _Emitter(state, source)
    change = signal.change
    match change:
        case MemberChange.FAILED:
            _member_failed(out, signal, policy)
        case MemberChange.RECOVERED | MemberChange.LEFT:
            _member_ended(out, signal, policy)
        case _:
            assert_never(change)
    return out.decision()


def decide_outage_command(
    state: OutageState, command: AdminCommand, policy: Policy, source: str | None = None
) -> OutageDecision:
    """An admin's `ack`, `recover` or `resolve` of the open outage (docs/outages.md), aimed
    at its id (`command.incident_id`; None: the group's open outage, whichever it is).
    Anything else, or an outage that is not open, is a `command.rejected` on the outage's
    chain, so the admin's CLI or page shows why."""
    out = _Emitter(state, source)
    record = out.record
    at, actor, reason = command.issued_at, command.actor, command.reason or None
    action = command.action

    def reject(why: str) -> OutageDecision:
        out.emit(
            CommandRejected(command.command_id, action.value, why, reason),
            at,
            record.tenant_id,
            incident_id=command.incident_id or record.outage_id or "",
            actor=actor,
        )
        return out.decision()

    if not policy.may_act(actor):
        return reject(f"actor {actor!r} is not in the policy's admins")
    wanted = command.incident_id
    if record.outages == 0:
        return reject(f"unknown outage {wanted or record.outage_key!r}: none has opened")
    if record.outage_id is None or (wanted is not None and wanted != record.outage_id):
        return reject(f"outage {wanted or record.outage_key!r} is not open (resolved)")
    outage_id = record.outage_id
    match action:
        case AdminAction.ACKNOWLEDGE:
            if record.acknowledged_by is not None:
                return reject(
                    f"outage {outage_id!r} is already acknowledged by {record.acknowledged_by!r}"
                )
            out.emit(
                OutageAcknowledged(command.command_id, reason), at, record.tenant_id, actor=actor
            )
        case AdminAction.RECOVER:
            _recover_members(out, command)
        case AdminAction.RESOLVE:
            _resolve_by_hand(out, command, policy)
        case AdminAction.SILENCE | AdminAction.RETIRE:
            return reject(
                f"{action.value} acts on a connector, not an outage: {action.value} its"
                " connectors one by one"
            )
        case _:
            assert_never(action)
    return out.decision()


def member_command_id(command_id: str, connector_id: str) -> str:
    """The id of the `recover` an outage's `recover` sends one member: deterministic, so a
    re-derived one (crash repair) is the same command."""
    return f"{command_id}:{connector_id}"


def _recover_members(out: _Emitter, command: AdminCommand) -> None:
    """A manual recovery of every member still failing: a `recover` of each, recorded on
    its own chain as a connector's `recover` is (a member with an attempt in flight
    rejects its own, on its chain)."""
    incidents = tuple(sorted(out.memory.failing))
    connectors = tuple(_connector_of(incident_id) for incident_id in incidents)
    requested = out.emit(
        OutageRecoveryRequested(command.command_id, connectors, incidents, command.reason or None),
        command.issued_at,
        out.record.tenant_id,
        actor=command.actor,
    )
    out.member_commands.extend(
        AdminCommand(
            command_id=member_command_id(command.command_id, connector_id),
            action=AdminAction.RECOVER,
            connector_id=connector_id,
            incident_id=None,
            actor=command.actor,
            reason=command.reason,
            issued_at=requested.occurred_at,
        )
        for connector_id in connectors
    )


def _resolve_by_hand(out: _Emitter, command: AdminCommand, policy: Policy) -> None:
    """The admin closes the outage: `outage.resolved` (manual); its members keep their own
    episodes, and the ones whose restarts it holds are released at once (nothing would
    release them later: the outage is gone)."""
    record, memory = out.record, out.memory
    outage_id = record.outage_id
    assert outage_id is not None  # noqa: S101 - only an open outage is resolved
    group = record.outage_key.removeprefix(OUTAGE_KEY_PREFIX)
    opened_at = record.opened_at if record.opened_at is not None else command.issued_at
    resolved_at = max(command.issued_at, record.last_occurred_at)
    held: list[str] = []
    if policy.outages_take_over:
        if memory.release_from is None:
            held = sorted(i for i in memory.failing if i != memory.probe)
        else:
            held = list(memory.releasing)
    view = OutageResolved(
        group=group,
        episodes=len(record.members),
        recovered=memory.recovered,
        left=memory.left,
        duration_ms=resolved_at - opened_at,
        resolution="manual",
        command_id=command.command_id,
        reason=command.reason or None,
        still_failing=len(memory.failing),
    )
    resolved = out.emit(view, command.issued_at, record.tenant_id, actor=command.actor)
    out.notices.extend(
        OutageNotice(
            connector_id=_connector_of(incident_id),
            outage_id=outage_id,
            group=group,
            incident_id=incident_id,
            role=OutageRole.RELEASED,
            at=resolved.occurred_at,
        )
        for incident_id in held
    )
    out.memory = OutageMemory(pending=memory.pending)
    if policy.outages_take_over:
        _page_resolved(out, resolved, view, record.tenants)


def _member_failed(out: _Emitter, signal: OutageSignal, policy: Policy) -> None:
    record, memory = out.record, out.memory
    incident_id = signal.incident_id
    if record.outage_id is not None:
        if incident_id in record.members:
            return
        memory = memory._replace(failing=memory.failing.set(incident_id, True))
        role = OutageRole.LINKED
        if policy.outages_take_over and memory.release_from is None:
            if memory.probe is None:
                memory = memory._replace(probe=incident_id)  # the probe has gone: this one
            else:
                role = OutageRole.HELD
        out.memory = memory
        joined = out.emit(
            OutageJoined(signal.group, signal.member_id, incident_id, signal.tenant_id),
            signal.at,
            record.tenant_id,
        )
        out.link(joined.occurred_at, signal.group, [(signal.member_id, incident_id, role)])
        tenant = signal.tenant_id
        if policy.outages_take_over and tenant is not None and tenant not in record.tenants:
            out.page(
                joined,
                NotificationKind.OUTAGE_OPENED,
                tenant_target(tenant),
                TENANT_LEVEL,
                _opened_summary(signal.group, [signal.member_id]),
            )
        return
    if any(p.incident_id == incident_id for p in memory.pending):
        return
    # One episode per connector at a time: a newer one replaces an entry whose end was lost.
    pending = tuple(p for p in memory.pending if p.connector_id != signal.member_id)
    pending += (Pending(signal.member_id, incident_id, signal.at, signal.tenant_id),)
    rules = policy.outages
    newest = max(p.detected_at for p in pending)
    recent = tuple(p for p in pending if p.detected_at >= newest - rules.window_ms)
    if len(recent) < rules.min_connectors:
        out.memory = memory._replace(pending=pending)
        return
    # Members failing since before the window stay outside: their cause may be another.
    # A tenant's group is that tenant's; a dependency's may span tenants: the platform's, so
    # a tenant's scoped views never show another tenant's connectors.
    tenant_id = signal.tenant_id if is_tenant_group(signal.group) else None
    out.memory = OutageMemory(
        pending=tuple(p for p in pending if p not in recent),
        failing=members_of(p.incident_id for p in recent),
    )
    tenants = tuple(dict.fromkeys(p.tenant_id for p in recent if p.tenant_id is not None))
    opened = out.emit(
        OutageOpened(
            group=signal.group,
            connectors=tuple(p.connector_id for p in recent),
            incidents=tuple(p.incident_id for p in recent),
            min_connectors=rules.min_connectors,
            window_ms=rules.window_ms,
            tenants=tenants,
        ),
        signal.at,
        tenant_id,
    )
    if not policy.outages_take_over:
        out.link(
            opened.occurred_at,
            signal.group,
            [(p.connector_id, p.incident_id, OutageRole.LINKED) for p in recent],
        )
        return
    # a circuit breaker: the first to fail probes the dependency, the others wait
    probe = recent[0].incident_id
    out.memory = out.memory._replace(probe=probe)
    out.link(
        opened.occurred_at,
        signal.group,
        [
            (p.connector_id, p.incident_id, OutageRole.LINKED if i == 0 else OutageRole.HELD)
            for i, p in enumerate(recent)
        ],
    )
    everyone = [p.connector_id for p in recent]
    out.page(
        opened,
        NotificationKind.OUTAGE_OPENED,
        PLATFORM_ADMIN,
        0,
        _opened_summary(signal.group, everyone),
    )
    for tenant in tenants:
        own = [p.connector_id for p in recent if p.tenant_id == tenant]
        out.page(
            opened,
            NotificationKind.OUTAGE_OPENED,
            tenant_target(tenant),
            TENANT_LEVEL,
            _opened_summary(signal.group, own),
        )


_LISTED = 20  # connectors named in a summary; the rest are counted


def _opened_summary(group: str, connectors: Sequence[str]) -> str:
    named = ", ".join(connectors[:_LISTED])
    more = f" and {len(connectors) - _LISTED} more" if len(connectors) > _LISTED else ""
    return f"Outage of {group}: {len(connectors)} connectors failing ({named}{more})"


def _member_ended(out: _Emitter, signal: OutageSignal, policy: Policy) -> None:
    record, memory = out.record, out.memory
    incident_id = signal.incident_id
    if incident_id not in memory.failing:
        pending = tuple(p for p in memory.pending if p.incident_id != incident_id)
        out.memory = memory._replace(pending=pending)
        return
    recovered = signal.change is MemberChange.RECOVERED
    memory = memory._replace(
        failing=memory.failing.delete(incident_id),
        recovered=memory.recovered + recovered,
        left=memory.left + (not recovered),
        releasing=tuple(i for i in memory.releasing if i != incident_id),
    )
    out.memory = memory
    if memory.failing:
        if policy.outages_take_over and memory.release_from is None:
            _breaker_member_ended(out, signal, recovered, policy)
        return
    opened_at = record.opened_at if record.opened_at is not None else signal.at
    resolved_at = max(signal.at, record.last_occurred_at)
    view = OutageResolved(
        group=signal.group,
        episodes=len(record.members),
        recovered=memory.recovered,
        left=memory.left,
        duration_ms=resolved_at - opened_at,
    )
    resolved = out.emit(view, signal.at, record.tenant_id)
    out.memory = OutageMemory(pending=memory.pending)
    if not policy.outages_take_over:
        return
    _page_resolved(out, resolved, view, record.tenants)


def _page_resolved(
    out: _Emitter, resolved: AuditEvent, view: OutageResolved, tenants: Sequence[str]
) -> None:
    """The closing pages: the Platform Admin and each tenant of the outage, once more."""
    summary = (
        f"Outage of {view.group} resolved after {view.duration_ms / 1000:.0f} s: "
        f"{view.episodes} failure episodes, {view.recovered} recovered, {view.left} closed"
    )
    if view.resolution == "manual":
        summary += f"; closed by hand by {resolved.actor}, {view.still_failing} still failing"
    audiences = [(PLATFORM_ADMIN, 0)] + [(tenant_target(t), TENANT_LEVEL) for t in tenants]
    for target, level in audiences:
        out.page(resolved, NotificationKind.OUTAGE_RESOLVED, target, level, summary)


def _connector_of(incident_id: str) -> str:
    """The connector of a failure episode: its id is `<connector id>:<sequence>` (the
    decider's `_detect`)."""
    return incident_id.rsplit(":", 1)[0]


def _breaker_member_ended(
    out: _Emitter, signal: OutageSignal, recovered: bool, policy: Policy
) -> None:
    """A member recovered: the dependency answers, the held members are released, paced.
    The probe left without recovering (an admin resolved or retired it): the next
    member (by incident id) probes in its place, released to restart at once."""
    memory = out.memory
    if recovered:
        held = sorted(i for i in memory.failing if i != memory.probe)
        out.memory = memory._replace(release_from=signal.at, releasing=tuple(held), released=0)
        _release_due(out, signal.at, signal.group, policy)
    elif memory.probe == signal.incident_id:
        probe = min(memory.failing)
        out.memory = memory._replace(probe=probe)
        out.link(signal.at, signal.group, [(_connector_of(probe), probe, OutageRole.RELEASED)])


def _release_interval_ms(released: int, policy: Policy) -> int:
    return math.ceil(released * 1000 / policy.outages.release_per_s)


def _release_due(out: _Emitter, now: int, group: str, policy: Policy) -> None:
    """Release the held members due by `now`: the k-th at `release_from` + k / rate."""
    memory = out.memory
    start = memory.release_from
    if start is None or not memory.releasing:
        return
    released = memory.released
    for incident_id in memory.releasing:
        at = start + _release_interval_ms(released, policy)
        if at > now:
            break
        out.link(at, group, [(_connector_of(incident_id), incident_id, OutageRole.RELEASED)])
        released += 1
    done = released - memory.released
    out.memory = memory._replace(releasing=memory.releasing[done:], released=released)


def outage_deadline(state: OutageState, policy: Policy) -> int | None:
    """When the outage's next held member is due for release (None: none is waiting)."""
    memory = state.memory
    if memory.release_from is None or not memory.releasing:
        return None
    return memory.release_from + _release_interval_ms(memory.released, policy)


def decide_outage_tick(
    state: OutageState, tick: Tick, policy: Policy, source: str | None = None
) -> OutageDecision:
    """Time passes for the outage: the releases due by then (notices, no events)."""
    out = _Emitter(state, source)
    group = state.record.outage_key.removeprefix(OUTAGE_KEY_PREFIX)
    _release_due(out, tick.now, group, policy)
    return out.decision()


def decide_outage_input(
    state: OutageState, message: WorkerInput, policy: Policy, source: str | None = None
) -> OutageDecision | None:
    """Any input of an outage's key; None for one that is not an outage's (a heartbeat
    grace: an outage has nothing to watch)."""
    if isinstance(message, OutageSignal):
        return decide_outage(state, message, policy, source)
    if isinstance(message, NotificationResult):
        return decide_notification_result(state, message, policy, source)
    if isinstance(message, AdminCommand):
        return decide_outage_command(state, message, policy, source)
    if isinstance(message, Tick):
        return decide_outage_tick(state, message, policy, source)
    return None


def decide_notification_result(
    state: OutageState, result: NotificationResult, policy: Policy, source: str | None = None
) -> OutageDecision:
    """The outcome of one of the outage's pages, on its chain. A failed delivery escalates
    as a connector's does: a tenant's to the Platform Admin, a level's to the next step of
    the policy's escalation. A re-delivered outcome changes nothing."""
    if result.dedup_key in state.record.notified:
        return OutageDecision((), state)
    out = _Emitter(state, source)
    outcome = NotificationSent if result.delivered else NotificationFailed
    failed = out.emit(
        outcome(result.dedup_key, result.target, result.level, result.detail or None),
        result.finished_at,
        state.record.tenant_id,
        incident_id=result.incident_id,
    )
    if result.delivered:
        return out.decision()
    level = 0 if result.level == TENANT_LEVEL else result.level + 1
    if level <= len(policy.escalation):
        out.page(
            failed,
            NotificationKind.INCIDENT_ESCALATED,
            escalation_target(level),
            level,
            f"Outage {result.incident_id}: the notification to {result.target} failed"
            f" ({result.detail or 'error'})",
            one_per_cause=True,
        )
    return out.decision()


# -- the state of record ----------------------------------------------------------------------


def evolve_outage(record: OutageRecord, event: AuditEvent) -> OutageRecord:
    """The outage's record after `event` (one of its own chain); EvidenceError when the
    attributes do not read as the event type's view."""
    moved = record._replace(
        tenant_id=event.tenant_id,
        sequence=event.sequence,
        head_hash=event.hash,
        last_occurred_at=event.occurred_at,
    )
    kind = event.type
    match kind:
        case EventType.OUTAGE_OPENED:
            opened = read(OutageOpened, event.attributes)
            return moved._replace(
                outage_id=event.event_id,
                opened_at=event.occurred_at,
                members=members_of(opened.incidents),
                outages=record.outages + 1,
                tenants=opened.tenants or (),
                notified=frozenset(),
                acknowledged_by=None,
            )
        case EventType.OUTAGE_JOINED:
            joined = read(OutageJoined, event.attributes)
            tenant = joined.tenant
            tenants = record.tenants
            if tenant is not None and tenant not in tenants:
                tenants = (*tenants, tenant)
            return moved._replace(
                members=record.members.set(joined.member_incident, True), tenants=tenants
            )
        case EventType.OUTAGE_RESOLVED:
            read(OutageResolved, event.attributes)
            return moved._replace(
                outage_id=None,
                opened_at=None,
                members=NO_MEMBERS,
                tenants=(),
                acknowledged_by=None,
            )
        case EventType.OUTAGE_ACKNOWLEDGED:
            read(OutageAcknowledged, event.attributes)
            return moved._replace(acknowledged_by=event.actor or "unknown")
        case EventType.OUTAGE_RECOVERY_REQUESTED:
            read(OutageRecoveryRequested, event.attributes)
            return moved
        case EventType.NOTIFICATION_SENT | EventType.NOTIFICATION_FAILED:
            outcome = read(NotificationOutcome, event.attributes)
            return moved._replace(notified=record.notified | {outcome.dedup_key})
        case EventType.COMMAND_REJECTED:
            read(CommandRejected, event.attributes)
            return moved
        case (
            EventType.FAILURE_DETECTED
            | EventType.FLAPPING_STARTED
            | EventType.FLAPPING_STOPPED
            | EventType.RECOVERY_STARTED
            | EventType.RECOVERY_ACTION_ACCEPTED
            | EventType.RECOVERY_FAILED
            | EventType.RECOVERY_COMPLETED
            | EventType.RETRIES_EXHAUSTED
            | EventType.SILENCED
            | EventType.RETIRED
            | EventType.INCIDENT_OPENED
            | EventType.INCIDENT_ACKNOWLEDGED
            | EventType.INCIDENT_ESCALATED
            | EventType.INCIDENT_RESOLVED
            | EventType.NOTIFICATION_SUPPRESSED
            | EventType.OUTAGE_LINKED
            | EventType.NOTIFICATION_RELEASED
            | EventType.OUTAGE_RELEASED
        ):
            raise TypeError(f"{kind.value} is not an outage's event")
        case _:
            assert_never(kind)


def fold_outage(record: OutageRecord, events: Iterable[AuditEvent]) -> OutageRecord:
    for event in events:
        record = evolve_outage(record, event)
    return record
