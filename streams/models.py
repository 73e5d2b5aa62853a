"""Wire and input models. Field names mirror `schemas/*.avsc` exactly.

Inputs reach the decider; outputs are audit events (`AuditEvent`) and commands
(`RecoveryRequest`, `NotificationRequest`). All are immutable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.timefmt import ms_from_iso

# Timestamps outside [2000-01-01, 2100-01-01) are rejected as invalid input: they are
# almost always seconds-vs-milliseconds mistakes, and they would poison MTTR.
MIN_TIMESTAMP_MS = ms_from_iso("2000-01-01T00:00:00Z")
MAX_TIMESTAMP_MS = ms_from_iso("2100-01-01T00:00:00Z")

EpochMillis = Annotated[int, Field(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)]
ConnectorId = Annotated[str, Field(min_length=1, max_length=249)]

GENESIS_HASH = "0" * 64
# Outages are keyed, chained and partitioned like connectors, under ids with this prefix
# (docs/outages.md); no connector's pings may use it.
OUTAGE_KEY_PREFIX = "outage:"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HealthStatus(StrEnum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


class RecoveryMode(StrEnum):
    AUTO = "AUTO"
    MANUAL = "MANUAL"


class HealthPing(_Frozen):
    """`schemas/health_ping.avsc`."""

    connector_id: ConnectorId
    tenant_id: str | None = None
    status: HealthStatus
    failure: str | None = None
    retryable: bool = True
    checked_at: EpochMillis
    latency_ms: int | None = None
    message: str | None = None
    position: str | None = None
    dependency: str | None = None

    @field_validator("connector_id")
    @classmethod
    def _no_blank_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("connector_id is blank")
        if value.startswith(OUTAGE_KEY_PREFIX):
            raise ValueError(f"connector_id may not start with {OUTAGE_KEY_PREFIX!r} (outages)")
        return value

    @property
    def healthy(self) -> bool:
        return self.status is HealthStatus.HEALTHY


class Tick(_Frozen):
    """Time passes for one connector: fire every deadline at or before `now`."""

    connector_id: ConnectorId
    now: EpochMillis


class Watch(_Frozen):
    """Start (or resume, after a restart or rebalance) the heartbeat watch of a connector.

    The heartbeat deadline becomes at least `at + heartbeat_timeout`: an expected connector
    that never pings is detected, and a restart never produces a wave of false misses.
    """

    connector_id: ConnectorId
    tenant_id: str | None = None
    at: EpochMillis


class AdminAction(StrEnum):
    ACKNOWLEDGE = "ACKNOWLEDGE"
    RECOVER = "RECOVER"
    RESOLVE = "RESOLVE"
    SILENCE = "SILENCE"
    RETIRE = "RETIRE"


class AdminCommand(_Frozen):
    """A Platform Admin's command (`schemas/admin_command.avsc`)."""

    command_id: str = Field(min_length=1)
    action: AdminAction
    connector_id: ConnectorId
    incident_id: str | None = None
    actor: str = Field(min_length=1)
    reason: str | None = None
    until: EpochMillis | None = None
    issued_at: EpochMillis


class RecoveryResult(_Frozen):
    """What a recovery executor reported (`schemas/recovery_result.avsc`).

    `ok` means the action was accepted by the runtime; only a healthy ping completes a
    recovery.
    """

    request_id: str
    connector_id: ConnectorId
    incident_id: str
    attempt: int
    ok: bool
    detail: str | None = None
    finished_at: EpochMillis


class NotificationResult(_Frozen):
    """What the notifier reported after its own bounded retries."""

    dedup_key: str
    connector_id: ConnectorId
    incident_id: str
    target: str
    level: int
    delivered: bool
    detail: str | None = None
    finished_at: EpochMillis


class OutageRole(StrEnum):
    """What an `OutageNotice` tells its member (the outage is a circuit breaker)."""

    LINKED = "LINKED"  # in the outage; restarts on its own backoff (the probe, or any
    # member when the policy does not hand restarts to outages)
    HELD = "HELD"  # in the outage; its automatic restarts are held (the circuit is open)
    RELEASED = "RELEASED"  # the dependency answered: restart now (the circuit closes)


class OutageNotice(_Frozen):
    """Internal input of a member connector (`schemas/outage_notice.avsc`): the outage
    `outage_id` of `group` holds the connector's failure episode `incident_id`, in `role`.
    Sent by the outage (docs/outages.md), keyed by the connector."""

    connector_id: ConnectorId
    outage_id: str
    group: str
    incident_id: str
    role: OutageRole = OutageRole.LINKED
    at: EpochMillis


DeciderInput = (
    HealthPing | Tick | Watch | AdminCommand | RecoveryResult | NotificationResult | OutageNotice
)


class MemberChange(StrEnum):
    FAILED = "FAILED"  # a failure episode of the member was detected
    RECOVERED = "RECOVERED"  # ... and recovered
    LEFT = "LEFT"  # ... and ended without a recovery (resolved by hand, retired)


class OutageSignal(_Frozen):
    """Internal input of an outage (`schemas/outage_signal.avsc`): one member connector's
    failure episode began or ended. `connector_id` is the outage's key,
    `outage:<group>`, so it is routed, ordered and stored like any connector's input."""

    connector_id: ConnectorId
    group: str
    member_id: ConnectorId
    incident_id: str
    change: MemberChange
    tenant_id: str | None = None
    failure: str | None = None
    at: EpochMillis


WorkerInput = DeciderInput | OutageSignal
"""Everything on the inputs topic: a connector's inputs, and an outage's."""


class EventType(StrEnum):
    FAILURE_DETECTED = "connector.failure.detected"
    FLAPPING_STARTED = "connector.flapping.started"
    FLAPPING_STOPPED = "connector.flapping.stopped"
    RECOVERY_STARTED = "connector.recovery.started"
    RECOVERY_ACTION_ACCEPTED = "connector.recovery.action_accepted"
    RECOVERY_FAILED = "connector.recovery.failed"
    RECOVERY_COMPLETED = "connector.recovery.completed"
    RETRIES_EXHAUSTED = "connector.retries.exhausted"
    SILENCED = "connector.silenced"
    RETIRED = "connector.retired"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
    INCIDENT_ESCALATED = "incident.escalated"
    INCIDENT_RESOLVED = "incident.resolved"
    NOTIFICATION_SENT = "notification.sent"
    NOTIFICATION_FAILED = "notification.failed"
    NOTIFICATION_SUPPRESSED = "notification.suppressed"
    COMMAND_REJECTED = "command.rejected"
    OUTAGE_OPENED = "outage.opened"
    OUTAGE_JOINED = "outage.joined"
    OUTAGE_RESOLVED = "outage.resolved"
    OUTAGE_LINKED = "connector.outage.linked"
    NOTIFICATION_RELEASED = "notification.released"
    OUTAGE_RELEASED = "connector.outage.released"
    OUTAGE_ACKNOWLEDGED = "outage.acknowledged"
    OUTAGE_RECOVERY_REQUESTED = "outage.recovery.requested"


class NotificationKind(StrEnum):
    """What a notification tells its audience (`notification_kind` on the wire)."""

    FAILURE_DETECTED = "failure_detected"
    RECOVERED = "recovered"
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_ESCALATED = "incident_escalated"
    FLAPPING_STARTED = "flapping_started"
    FLAPPING_STOPPED = "flapping_stopped"
    OUTAGE_OPENED = "outage_opened"  # an outage's, to the Platform Admin and each tenant
    OUTAGE_RESOLVED = "outage_resolved"


class OpenReason(StrEnum):
    """Why an incident was opened (`reason` of `incident.opened`)."""

    NON_RETRYABLE = "non_retryable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    MANUAL_RECOVERY_FAILED = "manual_recovery_failed"
    TENANT_NOTIFICATION_FAILED = "tenant_notification_failed"
    NOTIFICATION_FAILED = "notification_failed"


class EscalationReason(StrEnum):
    """Why an incident was escalated (`reason` of `incident.escalated`)."""

    UNACKNOWLEDGED = "unacknowledged"
    TENANT_NOTIFICATION_FAILED = "tenant_notification_failed"
    NOTIFICATION_FAILED = "notification_failed"


class FailureCause(StrEnum):
    """The failures the core names itself (`failure` of its events). A ping's own
    `failure` is free text from the connector, so the field stays a string."""

    HEARTBEAT_MISSED = "heartbeat_missed"
    FLAPPING = "flapping"
    UNKNOWN = "unknown"  # an unhealthy ping that named no failure


class AuditEvent(_Frozen):
    """`schemas/audit_event.avsc`: one link of a connector's evidence chain."""

    event_id: str
    type: EventType
    connector_id: ConnectorId
    tenant_id: str | None = None
    sequence: int = Field(ge=1)
    occurred_at: int
    incident_id: str | None = None
    attempt: int | None = None
    mode: RecoveryMode | None = None
    actor: str | None = None
    failure: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    prev_hash: str
    hash: str


class RecoveryRequest(_Frozen):
    """Command to a recovery executor (`schemas/recovery_request.avsc`).

    `request_id` is the id of the `connector.recovery.started` event: executors dedupe on it.
    """

    request_id: str
    connector_id: str
    tenant_id: str | None
    incident_id: str
    attempt: int
    mode: RecoveryMode
    actor: str | None
    requested_at: int
    deadline: int


class NotificationRequest(_Frozen):
    """Command to the notifier (`schemas/notification.avsc`).

    `dedup_key` = incident + kind + audience, so a re-derived request is delivered once.
    `level` is the escalation level of `target` (-1 = tenant admin, 0 = Platform Admin,
    1.. = escalation steps).
    """

    dedup_key: str
    notification_kind: NotificationKind
    target: str
    level: int
    connector_id: str
    tenant_id: str | None
    incident_id: str
    failure: str | None
    cause_event_id: str
    occurred_at: int
    summary: str


Command = RecoveryRequest | NotificationRequest
