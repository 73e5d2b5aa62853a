"""Crash repair: what to write for a re-delivered input when the audit log is ahead of the
state table. Pure, so every branch is unit-tested.

The worker writes, for each input: commands (awaited) → audit events (awaited) → the new
state and the audit position, to the table's changelog. A SIGKILL can cut that anywhere:

(a) outputs written, state and offset not: the input comes again and the decider re-derives
    the same events (it is deterministic); those already in the log are dropped.
(b) state written, offset not: the input comes again for a state that already holds it; the
    table remembers the offset of the last input applied per connector, so it is skipped.
(c) some of one input's events written: the written prefix is dropped, the rest written.

If a re-derived event differs from the logged one at the same sequence (a policy change
between crash and restart), the log wins: the logged events are folded into the state of
record and the input is not applied again.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.decider import Decision
from streams.evolve import fold
from streams.models import AuditEvent, Command, NotificationRequest, RecoveryRequest
from streams.state import ConnectorState


@dataclass(frozen=True)
class Reconciled:
    events: tuple[AuditEvent, ...]
    commands: tuple[Command, ...]
    state: ConnectorState
    dropped: int = 0
    diverged: bool = False


def cause_of(command: Command) -> str:
    if isinstance(command, RecoveryRequest):
        return command.request_id
    if isinstance(command, NotificationRequest):
        return command.cause_event_id
    raise TypeError(f"unknown command {command!r}")


def reconcile(state: ConnectorState, decision: Decision, logged: list[AuditEvent]) -> Reconciled:
    """`logged`: this connector's audit events found after the table's audit position."""
    ahead = [e for e in logged if e.sequence > state.record.sequence]
    if not ahead:
        return Reconciled(decision.events, decision.commands, decision.state)
    head = ahead[-1].sequence
    by_sequence = {e.sequence: e.hash for e in ahead}
    written = [e for e in decision.events if e.sequence <= head]
    if all(by_sequence.get(e.sequence) == e.hash for e in written):
        dropped_ids = {e.event_id for e in written}
        return Reconciled(
            tuple(e for e in decision.events if e.sequence > head),
            tuple(c for c in decision.commands if cause_of(c) not in dropped_ids),
            decision.state,
            dropped=len(written),
        )
    repaired = state._replace(record=fold(state.record, ahead))
    return Reconciled((), (), repaired, diverged=True)
