"""A test driver for the pure core, in the spirit of Kafka Streams' TopologyTestDriver:
inputs go in one at a time, time is an input the test advances, outputs are collected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.decider import decide
from streams.evolve import fold
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
    RecoveryRequest,
    RecoveryResult,
    Tick,
    Watch,
)
from streams.policy import Policy, parse_policy
from streams.state import ConnectorState, Record

T0 = 1_759_148_400_000  # 2025-09-29T12:20:00Z


@dataclass
class Driver:
    connector_id: str = "SAP-AR"
    tenant_id: str | None = "acme"
    policy: Policy = field(default_factory=lambda: parse_policy({}))
    now: int = T0
    state: ConnectorState = field(init=False)
    events: list[AuditEvent] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    inputs: list[DeciderInput] = field(default_factory=list)
    late: int = 0
    _commands_seen: int = 0

    def __post_init__(self) -> None:
        self.state = ConnectorState.new(self.connector_id)

    @classmethod
    def with_policy(cls, document: dict[str, Any], **kwargs: Any) -> Driver:
        return cls(policy=parse_policy(document), **kwargs)

    # -- inputs ---------------------------------------------------------------------------
    def feed(self, message: DeciderInput) -> list[AuditEvent]:
        self.inputs.append(message)
        decision = decide(self.state, message, self.policy, source=f"in/{len(self.inputs)}")
        self.state = decision.state
        self.events.extend(decision.events)
        self.commands.extend(decision.commands)
        self.late += int(decision.late)
        return list(decision.events)

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1000)

    def ping(
        self,
        healthy: bool,
        *,
        failure: str | None = "timeout",
        retryable: bool = True,
        position: str | None = None,
        at: int | None = None,
        dependency: str | None = None,
    ) -> list[AuditEvent]:
        return self.feed(
            HealthPing(
                connector_id=self.connector_id,
                tenant_id=self.tenant_id,
                status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
                failure=None if healthy else failure,
                retryable=retryable,
                checked_at=self.now if at is None else at,
                position=position,
                dependency=dependency,
            )
        )

    def tick(self) -> list[AuditEvent]:
        return self.feed(Tick(connector_id=self.connector_id, now=self.now))

    def run_for(self, seconds: float, step: float = 1.0) -> list[AuditEvent]:
        """Advance time in steps, ticking at each, like the worker's clock does."""
        out: list[AuditEvent] = []
        end = self.now + round(seconds * 1000)
        while self.now < end:
            self.now = min(end, self.now + round(step * 1000))
            out.extend(self.tick())
        return out

    def watch(self) -> list[AuditEvent]:
        return self.feed(
            Watch(connector_id=self.connector_id, tenant_id=self.tenant_id, at=self.now)
        )

    def admin(
        self,
        action: AdminAction,
        actor: str = "alice",
        *,
        incident: str | None = None,
        reason: str | None = None,
        until: int | None = None,
    ) -> list[AuditEvent]:
        return self.feed(
            AdminCommand(
                command_id=f"cmd-{len(self.inputs)}",
                action=action,
                connector_id=self.connector_id,
                incident_id=incident,
                actor=actor,
                reason=reason,
                until=until,
                issued_at=self.now,
            )
        )

    def recovery_result(self, ok: bool, detail: str | None = None) -> list[AuditEvent]:
        request = self.recovery_requests()[-1]
        return self.feed(
            RecoveryResult(
                request_id=request.request_id,
                connector_id=self.connector_id,
                incident_id=request.incident_id,
                attempt=request.attempt,
                ok=ok,
                detail=detail,
                finished_at=self.now,
            )
        )

    def deliver(self, request: NotificationRequest, delivered: bool = True) -> list[AuditEvent]:
        return self.feed(
            NotificationResult(
                dedup_key=request.dedup_key,
                connector_id=self.connector_id,
                incident_id=request.incident_id,
                target=request.target,
                level=request.level,
                delivered=delivered,
                detail=None if delivered else "HTTP 503",
                finished_at=self.now,
            )
        )

    def deliver_pending(self, fail_targets: frozenset[str] = frozenset()) -> list[AuditEvent]:
        """Play the notifier: answer every notification request not answered yet."""
        out: list[AuditEvent] = []
        while self._commands_seen < len(self.commands):
            command = self.commands[self._commands_seen]
            self._commands_seen += 1
            if isinstance(command, NotificationRequest):
                out.extend(self.deliver(command, command.target not in fail_targets))
        return out

    # -- observations ---------------------------------------------------------------------
    def types(self, events: list[AuditEvent] | None = None) -> list[str]:
        return [e.type.value for e in (self.events if events is None else events)]

    def of_type(self, kind: EventType) -> list[AuditEvent]:
        return [e for e in self.events if e.type is kind]

    def recovery_requests(self) -> list[RecoveryRequest]:
        return [c for c in self.commands if isinstance(c, RecoveryRequest)]

    def notifications(self) -> list[NotificationRequest]:
        return [c for c in self.commands if isinstance(c, NotificationRequest)]

    def replayed(self) -> Record:
        return fold(Record(self.connector_id), self.events)
