"""Per-connector state, split in two on purpose.

All three are NamedTuples: immutable, and several times cheaper to build and copy than
frozen dataclasses on the hot path (every input builds at least one).

* `Record` — the **state of record**. It is exactly the fold of `evolve` over the
  connector's audit events: status, current episode/incident, attempts, sequence and chain
  head, and every deadline the core is waiting for (each written into the event that set
  it). Replay rebuilds it from the audit log alone.
* `DetectorMemory` — **transient detector memory**: debounce counter, flap window, last
  failure kind and position. With the liveness fields of `ConnectorState` (last ping time,
  heartbeat deadline) it lives only in the live table; losing it costs at most a re-learned
  debounce window and a heartbeat grace, never evidence.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from streams.models import GENESIS_HASH, RecoveryMode


class Phase(StrEnum):
    OK = "OK"  # no open failure episode (healthy, or not yet judged)
    FAILED = "FAILED"  # a failure episode is open
    RETIRED = "RETIRED"


class DisplayState(StrEnum):
    """What the live views show a connector as (streams/views.py `display_state`)."""

    HEALTHY = "healthy"
    FAILING = "failing"
    RECOVERING = "recovering"
    FLAPPING = "flapping"
    SILENCED = "silenced"
    RETIRED = "retired"


class Record(NamedTuple):
    connector_id: str
    tenant_id: str | None = None
    sequence: int = 0
    head_hash: str = GENESIS_HASH
    last_occurred_at: int = 0
    phase: Phase = Phase.OK
    flapping: bool = False
    silenced_until: int | None = None
    # The current failure episode (None when phase is OK).
    incident_id: str | None = None
    failure: str | None = None
    retryable: bool = True
    detected_at: int | None = None
    position_at_failure: str | None = None
    attempts: int = 0  # attempts started in this episode, automatic and manual
    auto_attempts: int = 0
    attempt_in_flight: int | None = None
    attempt_mode: RecoveryMode | None = None
    attempt_actor: str | None = None
    attempt_deadline: int | None = None
    next_attempt_at: int | None = None
    # The incident: the part of an episode that needs a human.
    incident_open: bool = False
    incident_opened_at: int | None = None
    acknowledged: bool = False
    escalation_level: int = -1  # highest level notified: 0 Platform Admin, k escalation step k
    tenant_escalated: bool = False
    next_escalation_level: int | None = None
    next_escalation_at: int | None = None
    notified: frozenset[str] = frozenset()  # dedup keys with an outcome
    outage_group: str | None = None  # the episode's outage group (docs/outages.md)
    outage_id: str | None = None  # the outage the episode is linked to (an OutageNotice)
    notify_at: int | None = None  # the failure's page is held until then (group wait)
    restarts_held: bool = False  # by its outage, until released (a circuit breaker)


class DetectorMemory(NamedTuple):
    tenant_id: str | None = None
    watched: bool = False  # pinged at least once, or expected by the policy
    consecutive_unhealthy: int = 0  # saturates at the policy's failure_threshold
    first_failing_at: int | None = None
    last_failure: str | None = None
    last_retryable: bool = True
    last_position: str | None = None
    # Flap window as a bit string, newest result in bit 0 (1 = healthy).
    history_bits: int = 0
    history_len: int = 0
    late_pings: int = 0
    ignored_pings: int = 0  # pings for a retired connector
    dependency: str | None = None  # the last ping's `dependency`


class ConnectorState(NamedTuple):
    """Record + detector memory + liveness. Liveness (the last applied `checked_at` and the
    heartbeat deadline it implies) changes with every ping, so it is kept apart: a steady
    ping builds one small tuple and shares the rest. (A NamedTuple, not a dataclass: it is
    built for every input, and tuple construction is several times cheaper.)"""

    record: Record
    memory: DetectorMemory = DetectorMemory()
    last_checked_at: int | None = None
    heartbeat_deadline: int | None = None

    @staticmethod
    def new(connector_id: str) -> ConnectorState:
        return ConnectorState(Record(connector_id))

    @property
    def known(self) -> bool:
        return (
            self.memory.watched
            or self.record.phase is not Phase.OK
            or (self.record.incident_id is not None)
        )
