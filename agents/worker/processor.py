"""The decider without a broker: inputs in, outputs out, over a state store.

`InputProcessor.process(items)` applies decoded inputs of the inputs topic (in partition
order) to the per-connector states of a `StateStore` and returns what must happen next, as
data: the commands and audit events to send (commands first), and the whole new states to
write once the broker holds those. Nothing here awaits, reads a clock or touches Kafka, so
tests and benchmarks drive it with a dict (`DictStore`); the live worker gives it the
Faust table (agents/worker/faust_context.py) and sends its outputs
(agents/worker/effects.py).

Kept in memory beside the store: liveness (last ping time, heartbeat deadline: it changes
with every ping and is not written, agents/worker/statecodec.py), the deadline index the
clock reads, and the audit events a crash left ahead of the table (agents/worker/repair.py).
Parsed states are cached up to `STATES_CACHED` (as Kafka Streams caches in front of RocksDB):
what the processor holds follows that bound and the fleet's liveness (a packed int per
connector), not every state the worker has ever read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple, Protocol, cast

from agents.wire.records import Unpacked
from agents.worker.clock import DeadlineIndex
from agents.worker.heldids import rekey
from agents.worker.repair import reconcile
from agents.worker.repairfile import RepairFile
from agents.worker.statecodec import (
    StateFormatError,
    dump_outage,
    dump_state,
    load_outage,
    load_state,
)
from streams.decider import Decision, decide, decide_ping, next_deadline
from streams.grouping import is_outage_key
from streams.models import (
    AdminCommand,
    AuditEvent,
    Command,
    DeciderInput,
    HealthPing,
    OutageNotice,
    OutageSignal,
    WorkerInput,
)
from streams.outages import (
    OutageDecision,
    OutageState,
    decide_outage_input,
    fold_outage,
    member_signals,
    outage_deadline,
)
from streams.policy import Policy
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

_tuple_new = tuple.__new__  # a NamedTuple without its Python-level __new__, per input

COUNTERS = (
    "inputs",
    "late_pings",
    "skipped_redeliveries",
    "repaired_dropped",
    "states_evicted",
)

# Parsed states held (~1 KB each; the worker's is `Settings.states_cached`): every connector
# of a fleet of thousands pinging steadily stays parsed; beyond it, the oldest read are
# dropped and read again from the store when needed (a store read and a JSON parse, ~20 us).
STATES_CACHED = 10_000
_EVICT_TO = 7 / 8  # evicting in chunks: a scan from a dict's front per chunk, not per state

Liveness = tuple[int | None, int | None]  # last ping time, heartbeat deadline
_PACKABLE = 1 << 62
_SHIFT = 63


def _pack(live: Liveness) -> int | Liveness:
    """(last, deadline) in one int (~40 bytes, not a 120-byte tuple of two ints): each as
    value + 1, 0 for None. Outside [0, 2**62) (never a real time in ms) the tuple is kept."""
    last, deadline = live
    if (last is None or 0 <= last < _PACKABLE) and (deadline is None or 0 <= deadline < _PACKABLE):
        return ((0 if last is None else last + 1) << _SHIFT) | (
            0 if deadline is None else deadline + 1
        )
    return live


def _unpack(packed: int | Liveness) -> Liveness:
    if isinstance(packed, tuple):
        return packed
    last, deadline = packed >> _SHIFT, packed & ((1 << _SHIFT) - 1)
    return (last - 1 if last else None), (deadline - 1 if deadline else None)


class StateStore(Protocol):
    """The table of connector states: the stored bytes (agents/worker/statecodec.py) per
    key, in partitions that are the inputs topic's (each its own changelog partition and
    local store, restored and handed over with the input partition). The partition is
    given, not derived from the key: a checkpoint row lives in the partition it
    checkpoints."""

    def get(self, key: bytes, partition: int) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, partition: int) -> None: ...


class DictStore:
    """A `StateStore` in a dict, for tests and benchmarks."""

    def __init__(self, data: MutableMapping[bytes, bytes] | None = None) -> None:
        self.data: MutableMapping[bytes, bytes] = {} if data is None else data

    def get(self, key: bytes, partition: int) -> bytes | None:  # noqa: ARG002 - one dict holds all partitions
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, partition: int) -> None:  # noqa: ARG002 - as in get
        self.data[key] = value


class Input(NamedTuple):
    """One decoded item of an inputs-topic record (agents.wire.records.unpack), and the
    inputs partition it was read from."""

    item: Unpacked
    partition: int


class PendingState(NamedTuple):
    state: ConnectorState
    applied: int  # position of the last input applied, stored beside the state
    partition: int  # the inputs partition: where the write goes


class PendingOutage(NamedTuple):
    state: OutageState
    applied: int
    partition: int


class DeadLetter(NamedTuple):
    partition: int
    problem: str
    data: bytes | None


@dataclass
class Outputs:
    """What one batch of inputs calls for, in the order it must happen: commands, then
    audit events (an event in the log implies its commands are), then state writes."""

    commands: list[tuple[bytes, Command]] = field(default_factory=list)
    events: list[tuple[bytes, AuditEvent, int]] = field(
        default_factory=list
    )  # key, event, partition
    states: dict[bytes, PendingState] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # inputs of outages (docs/outages.md), sent like commands: before the events
    signals: list[OutageSignal] = field(default_factory=list)
    notices: list[OutageNotice] = field(default_factory=list)  # outages to their members
    # an admin's `recover` of an outage, fanned out to its members (docs/outages.md)
    member_commands: list[AdminCommand] = field(default_factory=list)
    outages: dict[bytes, PendingOutage] = field(default_factory=dict)
    # (key, stored bytes, partition): states crash repair folded in a process of its own
    stored: list[tuple[bytes, bytes, int]] = field(default_factory=list)

    def audit_partitions(self) -> set[int]:
        """Partitions whose audit position moves (and must be written beside the states)."""
        return {partition for _key, _event, partition in self.events}

    def state_writes(self) -> Iterable[tuple[bytes, bytes, int]]:
        """(key, stored bytes, partition): the whole new value, never a mutation in place."""
        yield from self.stored
        for key, pending in self.states.items():
            yield key, dump_state(pending.state, pending.applied), pending.partition
        for key, outage in self.outages.items():
            yield key, dump_outage(outage.state, outage.applied), outage.partition


class InputProcessor:
    def __init__(
        self,
        policy: Policy,
        store: StateStore,
        partitions: int,
        counters: dict[str, int] | None = None,
        *,
        states_cached: int = STATES_CACHED,
        ids: Callable[[str], str] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.partitions = partitions
        self.states_cached = states_cached
        self.deadlines = DeadlineIndex(ids)
        # Liveness (last ping time, heartbeat deadline) is in memory only: in the parsed
        # states below, and here (`_pack`ed) for the connectors whose parsed state was
        # dropped (evicted, or with a revoked partition), until they are read again or
        # `keep_owned` forgets them; per inputs partition, as the parsed states are.
        self._liveness: dict[int, dict[str, int | Liveness]] = {}  # ids as held (`ids`)
        # Crash repair: per connector, audit events found after the table's audit position
        # (written by inputs whose state did not reach the table).
        self.logged_ahead: dict[str, list[AuditEvent]] = {}
        # Parsed states of owned partitions, as in the store plus the liveness: a steady
        # ping is then a dict lookup, no store read, no JSON and no copy. Filled on first
        # read, on each write and by each steady ping (which changes only the liveness); the
        # oldest read are evicted beyond `states_cached` (`_evict`); a partition's part is
        # dropped when it is revoked (`forget_partitions`), since another worker may write
        # its store before it comes back.
        self._parsed: dict[int, dict[bytes, tuple[ConnectorState, int]]] = {}
        self._cached = 0  # parsed states, counted on each miss and recounted by `_evict`
        # Crash repair of connectors no re-delivered input will reach: their stored state
        # with the events logged ahead of it folded in, to be written with the partition's
        # next batch (`repairs_chunk`); until then the processor reads them from here.
        self.repairs: dict[int, dict[bytes, PendingState]] = {}
        # The same, folded in a process of its own (repair_process.py): on disk until written.
        self.repair_files: dict[int, RepairFile] = {}
        self.counters = {} if counters is None else counters
        for name in COUNTERS:
            self.counters.setdefault(name, 0)

    def process(self, inputs: Iterable[Input]) -> Outputs:
        outputs = Outputs()
        apply = self.apply
        for one in inputs:
            apply(one, outputs)
        return outputs

    def apply(self, one: Input, outputs: Outputs) -> None:
        """One input into `outputs` (a batch may grow by several calls, e.g. a gap's
        records read directly before the record that revealed the gap).

        An input the state already holds (re-delivered after a crash) is not decided again,
        but its state is written again as it is: after a kill the local store can hold a
        write its changelog never got (RocksDB took it, the changelog's send was still
        buffered). Written again, the changelog has it before the input's offset is
        committed past, so a store rebuilt from the changelog later does not go back to
        before it (R1 at fleet scale: an outage rebuilt so lost the joins its re-delivered
        signals had made, and the next signal's decision diverged from the log)."""
        item, partition = one
        message = item.message
        if message is None:  # only our own router writes here; keep going anyway
            outputs.dead_letters.append(DeadLetter(partition, item.problem or "?", item.data))
            return
        connector_id = message.connector_id
        key = connector_id.encode()
        pending = outputs.states.get(key)
        if pending is not None:
            state, applied = pending.state, pending.applied
        else:
            parsed = self._parsed.get(partition)
            cached = None if parsed is None else parsed.get(key)
            if cached is None:
                # An outage's inputs always land here: its state is never in the caches of
                # connectors' states, so the steady-ping path pays nothing for outages.
                if is_outage_key(connector_id):
                    self._apply_outage(one, message, outputs)
                    return
                state, applied = self._stored(key, connector_id, partition)
            else:
                state, applied = cached
        if item.position <= applied:  # crash repair case (b): the state holds this input
            self._redelivered(outputs, key, None if pending else (state, applied, partition))
            return
        logged = self.logged_ahead.get(connector_id) if self.logged_ahead else None
        if pending is None and not logged and type(message) is HealthPing:
            decision = decide_ping(state, message, self.policy, item.source)
            if isinstance(decision, ConnectorState):  # a steady ping (most): only the liveness
                self.counters["inputs"] += 1
                self._parsed[partition][key] = (decision, applied)
                due = next_deadline(decision.record, decision.heartbeat_deadline)
                self.deadlines.schedule(connector_id, None if due is None else due[0])
                return
        else:
            # An outage's inputs went to `_apply_outage` above; anything else here is a
            # connector's (`decide` refuses any other type).
            decision = decide(state, cast(DeciderInput, message), self.policy, item.source)
        counters = self.counters
        counters["inputs"] += 1
        if decision.late:
            counters["late_pings"] += 1
        events, commands, new_state = decision.events, decision.commands, decision.state
        if events:
            # Derived from the whole decision, before crash repair drops what is logged
            # already: a re-sent signal is ignored by its outage.
            outputs.signals.extend(member_signals(state.record, events))
        if logged:
            events, commands, new_state = self._repaired(state, decision, logged, item.source)
        # Written only on change: a steady ping changes only the liveness.
        # Identity first: a steady ping keeps the record and memory objects it was given.
        if (
            pending is not None
            or events
            or (new_state.record is not state.record and new_state.record != state.record)
            or (new_state.memory is not state.memory and new_state.memory != state.memory)
        ):
            outputs.states[key] = _tuple_new(PendingState, (new_state, item.position, partition))
        else:
            self._parsed[partition][key] = (new_state, applied)
        if commands:
            outputs.commands.extend((key, command) for command in commands)
        if events:
            outputs.events.extend((key, audit_event, partition) for audit_event in events)
        due = next_deadline(new_state.record, new_state.heartbeat_deadline)
        self.deadlines.schedule(connector_id, None if due is None else due[0])

    def _redelivered(
        self, outputs: Outputs, key: bytes, unwritten: tuple[ConnectorState, int, int] | None
    ) -> None:
        """An input the state holds (`apply`): its state, if not yet in the batch's writes
        (`unwritten`: state, applied, partition), written again as it is."""
        if unwritten is not None:
            outputs.states[key] = _tuple_new(PendingState, unwritten)
        self.counters["skipped_redeliveries"] += 1

    def _apply_outage(self, one: Input, message: WorkerInput, outputs: Outputs) -> None:
        """An input of an outage's key (streams/outages.py): a member signal or the outcome
        of one of its pages is judged, an admin command refused (outages take none yet),
        anything else is not the outage's; the outage's state is written on every change."""
        item, partition = one
        outage_id = message.connector_id
        key = outage_id.encode()
        pending = outputs.outages.get(key)
        if pending is not None:
            state, applied = pending.state, pending.applied
        else:
            stored = self.store.get(key, partition)
            if stored is None:
                state, applied = OutageState.new(outage_id), -1
            else:
                state, applied = load_outage(stored)
        if item.position <= applied:
            if pending is None:
                outputs.outages[key] = PendingOutage(state, applied, partition)  # see `apply`
            self.counters["skipped_redeliveries"] += 1
            return
        decision = decide_outage_input(state, message, self.policy, item.source)
        if decision is None:
            log.warning(
                "%s: ignored a %s (not an outage's input)", outage_id, type(message).__name__
            )
            return
        self.counters["inputs"] += 1
        logged = self.logged_ahead.get(outage_id) if self.logged_ahead else None
        if logged:
            decision = self._repaired_outage(state, decision, logged)
        if pending is not None or decision.state != state:
            outputs.outages[key] = PendingOutage(decision.state, item.position, partition)
        outputs.notices.extend(decision.notices)
        outputs.member_commands.extend(decision.member_commands)
        outputs.commands.extend((key, command) for command in decision.commands)
        # the outage's own deadline: its next paced release (the clock ticks it)
        self.deadlines.schedule(outage_id, outage_deadline(decision.state, self.policy))
        outputs.events.extend((key, event, partition) for event in decision.events)

    def _repaired_outage(
        self, state: OutageState, decision: OutageDecision, logged: list[AuditEvent]
    ) -> OutageDecision:
        """Crash repair of an outage, as `reconcile` does for a connector: what the log holds
        already is not written again; if it differs, the log wins."""
        outage_id = state.record.outage_key
        ahead = [e for e in logged if e.sequence > state.record.sequence]
        remaining = [e for e in ahead if e.sequence > decision.state.record.sequence]
        if remaining:
            self.logged_ahead[outage_id] = remaining
        else:
            del self.logged_ahead[outage_id]
        if not ahead:
            return decision
        logged_hashes = {e.sequence: e.hash for e in ahead}
        written = [e for e in decision.events if e.sequence in logged_hashes]
        if all(logged_hashes[e.sequence] == e.hash for e in written):
            self.counters["repaired_dropped"] += len(written)
            kept = tuple(e for e in decision.events if e.sequence not in logged_hashes)
            # the notices are sent again: a member ignores one it has applied
            return decision._replace(events=kept)
        log.warning(
            "%s: the audit log diverges from the re-derived decision; the log wins", outage_id
        )
        record = fold_outage(state.record, ahead)
        return OutageDecision((), decision.state._replace(record=record))

    def _repaired(
        self, state: ConnectorState, decision: Decision, logged: list[AuditEvent], source: str
    ) -> tuple[tuple[AuditEvent, ...], tuple[Command, ...], ConnectorState]:
        """Crash repair: `decision` reconciled with the events of it already in the log."""
        connector_id = state.record.connector_id
        fixed = reconcile(state, decision, logged)
        self.counters["repaired_dropped"] += fixed.dropped
        log.info(
            "crash repair for %s at %s: %d re-derived events already logged",
            connector_id,
            source,
            fixed.dropped,
        )
        if fixed.diverged:
            log.warning(
                "%s: the audit log diverges from the re-derived decision; the log wins",
                connector_id,
            )
        remaining = [e for e in logged if e.sequence > fixed.state.record.sequence]
        if remaining:
            self.logged_ahead[connector_id] = remaining
        else:
            del self.logged_ahead[connector_id]
        return fixed.events, fixed.commands, fixed.state

    def _stored(self, key: bytes, connector_id: str, partition: int) -> tuple[ConnectorState, int]:
        """A state not in the parsed-state cache (`apply` looked): read, parsed, cached. A
        repaired state not yet written is read from `repairs`, not from the store."""
        repaired = self.repairs.get(partition, {}).get(key)
        repair_file = self.repair_files.get(partition)
        if repaired is not None:
            state, applied = repaired.state, repaired.applied
        else:
            stored = None if repair_file is None else repair_file.get(key)
            if stored is None:
                stored = self.store.get(key, partition)
            if stored is None:
                state, applied = ConnectorState.new(connector_id), -1
            else:
                state, applied = load_state(stored)
        aside = self._liveness.get(partition)
        live = None if aside is None else aside.pop(connector_id, None)
        if live is not None:
            last, deadline = _unpack(live)
            state = state._replace(last_checked_at=last, heartbeat_deadline=deadline)
        self._parsed.setdefault(partition, {})[key] = (state, applied)
        self._cached += 1
        if self._cached > self.states_cached:
            self._evict()
        return state, applied

    def _evict(self) -> None:
        """The oldest read parsed states down to 7/8 of the bound, each partition its share;
        their liveness kept aside (packed) for when they are read again."""
        total = sum(len(parsed) for parsed in self._parsed.values())
        excess = total - int(self.states_cached * _EVICT_TO)
        if total <= self.states_cached or excess <= 0:
            self._cached = total
            return
        evicted = 0
        for partition, parsed in self._parsed.items():
            share = -(-excess * len(parsed) // total)  # rounded up: the bound is met
            liveness = self._liveness.setdefault(partition, {})
            for key in list(islice(parsed, share)):
                state = parsed.pop(key)[0]
                evicted += 1
                self._set_aside(liveness, state)
        self._cached = total - evicted
        self.counters["states_evicted"] += evicted

    def repaired(self, partition: int, state: ConnectorState, applied: int) -> None:
        """A state the log was ahead of, folded forward at assignment: read from now on
        (`_stored` looks in `repairs` first), written with the partition's next batch. Not
        parsed-cached: a first start repairs every connector, and the cache's first eviction
        would walk them all."""
        key = state.record.connector_id.encode()
        self.repairs.setdefault(partition, {})[key] = PendingState(state, applied, partition)

    def repairs_chunk(self, partition: int, size: int) -> Outputs | None:
        """Up to `size` repaired states of `partition` not yet written, as outputs to
        `write`; None once all are."""
        pending = self.repairs.get(partition)
        if not pending:
            self.repairs.pop(partition, None)
            return self._repair_file_chunk(partition, size)
        outputs = Outputs()
        for key in list(islice(pending, size)):
            outputs.states[key] = pending.pop(key)
        if not pending:
            del self.repairs[partition]
        return outputs

    def _repair_file_chunk(self, partition: int, size: int) -> Outputs | None:
        repair_file = self.repair_files.get(partition)
        if repair_file is None:
            return None
        outputs = Outputs(stored=[(k, v, partition) for k, v in repair_file.chunk(size)])
        if not repair_file.remaining:
            del self.repair_files[partition]
        return outputs if outputs.stored else None

    @property
    def repairs_pending(self) -> bool:
        return bool(self.repairs or self.repair_files)

    def drop_repairs(self) -> None:
        """What an assignment repaired and did not write yet: the next assignment's crash
        repair reads the log from the table's positions again, and finds it again."""
        self.repairs = {}
        for repair_file in self.repair_files.values():
            repair_file.close()
        self.repair_files = {}

    def write(self, outputs: Outputs) -> None:
        """The batch's new states into the store: call only once the broker holds its
        commands and events, so the table is never ahead of the log."""
        writes = len(outputs.states) + len(outputs.outages) + len(outputs.stored)
        for _slice in self.write_in_slices(outputs, writes):
            pass

    def write_in_slices(self, outputs: Outputs, size: int) -> Iterator[None]:
        """`write`, pausing after every `size` writes and cache updates (a start's graces
        change every connector's state: 322,000 writes at once held the worker's loop for
        seconds)."""
        for count, (key, value, partition) in enumerate(outputs.state_writes(), 1):
            self.store.put(key, value, partition)
            if not count % size:
                yield
        for count, (key, pending) in enumerate(outputs.states.items(), 1):
            self._parsed.setdefault(pending.partition, {})[key] = (pending.state, pending.applied)
            aside = self._liveness.get(pending.partition)
            if aside:
                aside.pop(pending.state.record.connector_id, None)  # the state holds the newer
            if not count % size:
                yield
        if outputs.states:
            self._evict()

    def schedule_outages(self, stored: dict[str, bytes]) -> None:
        """After an assignment: the deadlines of the owned outages (their paced releases),
        from their stored states, into the index the heartbeat graces rebuild."""
        for outage_id, value in stored.items():
            try:
                state = load_outage(value)[0]
            except StateFormatError as error:
                log.warning("%s: no release deadline scheduled: %s", outage_id, error)
                continue
            self.deadlines.schedule(outage_id, outage_deadline(state, self.policy))

    def liveness_of(self, connector_id: str) -> Liveness:
        """(last ping time, heartbeat deadline) as this worker knows them."""
        key = connector_id.encode()
        for parsed in self._parsed.values():
            cached = parsed.get(key)
            if cached is not None:
                return cached[0].last_checked_at, cached[0].heartbeat_deadline
        for aside in self._liveness.values():
            packed = aside.get(connector_id)
            if packed is not None:
                return _unpack(packed)
        return None, None

    def _set_aside(self, aside: dict[str, int | Liveness], state: ConnectorState) -> None:
        """The liveness of a state no longer parsed, kept (packed) until it is read again."""
        if state.last_checked_at is not None or state.heartbeat_deadline is not None:
            connector_id = self.deadlines.held(state.record.connector_id)
            aside[connector_id] = _pack((state.last_checked_at, state.heartbeat_deadline))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked: their stored states may change elsewhere before they come back; their
        connectors' liveness is kept aside in case they do (`keep_owned` decides)."""
        for partition in partitions:
            self.repairs.pop(partition, None)  # the new owner repairs them from the log
            repair_file = self.repair_files.pop(partition, None)
            if repair_file is not None:
                repair_file.close()
            aside = self._liveness.setdefault(partition, {})
            for state, _applied in self._parsed.pop(partition, {}).values():
                self._set_aside(aside, state)

    def share_ids(self, slice_rows: int) -> Iterator[None]:
        """The deadline index and the liveness set aside keyed on the ids as the process
        holds them (`DeadlineIndex.held`), once it holds them: a first start's graces are
        decided before the views hold the fleet. Yields after every `slice_rows` rows."""
        yield from self.deadlines.share_ids(slice_rows)
        for partition, aside in list(self._liveness.items()):
            moved = yield from rekey(aside, self.deadlines.held, slice_rows)
            if moved and self._liveness.get(partition) is aside:
                self._liveness[partition] = dict(aside)

    def keep_owned(self, owned: set[int]) -> None:
        """After a rebalance: forget the liveness of connectors this worker no longer owns,
        and the deadline index (rebuilt by the heartbeat graces)."""
        self.deadlines.forget()
        self.repairs = {p: pending for p, pending in self.repairs.items() if p in owned}
        for partition in set(self.repair_files) - owned:
            self.repair_files.pop(partition).close()
        for partition in set(self._parsed) - owned:
            self.forget_partitions([partition])
        self._liveness = {p: aside for p, aside in self._liveness.items() if p in owned}
