"""Outages through the worker's InputProcessor without a broker: the signals a batch of
connector inputs sends, the outage's state in the table beside the connectors', re-sent
and re-delivered signals, crash repair against the log (docs/outages.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.checkpoints import Heads
from agents.worker.processor import DictStore, Input, InputProcessor, Outputs
from agents.worker.statecodec import dump_outage, load_head, load_outage, load_state
from agents.worker.tablescan import OwnedState
from streams.models import (
    AdminAction,
    AdminCommand,
    AuditEvent,
    EventType,
    HealthPing,
    HealthStatus,
    MemberChange,
    OutageNotice,
    OutageSignal,
    RecoveryMode,
    Tick,
    Watch,
    WorkerInput,
)
from streams.policy import parse_policy
from tests.core.test_outages import play_fleet, steps

KEY = "outage:dependency:sap-prod"


@dataclass
class Worker:
    """One processor over a dict store; every input is numbered as the inputs topic would."""

    processor: InputProcessor = field(
        default_factory=lambda: InputProcessor(parse_policy({}), DictStore(), partitions=1)
    )
    position: int = 0
    log: list[AuditEvent] = field(default_factory=list)
    sent_signals: list[OutageSignal | OutageNotice] = field(default_factory=list)

    def feed(self, *messages: WorkerInput) -> Outputs:
        items = []
        for message in messages:
            self.position += 1
            items.append(
                Input(Unpacked(message, self.position, f"in/{self.position}", None, None), 0)
            )
        outputs = self.processor.process(items)
        self.processor.write(outputs)
        self.log.extend(event for _key, event, _partition in outputs.events)
        self.sent_signals.extend(outputs.signals)
        self.sent_signals.extend(outputs.notices)
        return outputs

    def fail(self, count: int, at: int = T0) -> Outputs:
        return self.feed(*(_ping(f"SAP-{index}", False, at + index) for index in range(count)))

    def pump(self) -> None:
        """Apply every signal and notice sent so far, as their keys' owners read them back."""
        while self.sent_signals:
            signals, self.sent_signals = self.sent_signals, []
            self.feed(*signals)

    def outage_types(self) -> list[str]:
        return [e.type.value for e in self.log if e.connector_id == KEY]


def _ping(connector_id: str, healthy: bool, at: int) -> HealthPing:
    return HealthPing(
        connector_id=connector_id,
        tenant_id="acme",
        status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
        failure=None if healthy else "timeout",
        checked_at=at,
        dependency="sap-prod",
    )


def test_a_batch_of_failures_sends_one_signal_per_episode_to_the_outage_key() -> None:
    worker = Worker()
    outputs = worker.fail(6)
    assert [(s.connector_id, s.member_id, s.change) for s in outputs.signals] == [
        (KEY, f"SAP-{index}", MemberChange.FAILED) for index in range(6)
    ]
    assert worker.outage_types() == []
    worker.pump()
    assert worker.outage_types() == ["outage.opened", "outage.joined"]
    worker.feed(*(_ping(f"SAP-{index}", True, T0 + 5_000) for index in range(6)))
    worker.pump()
    assert worker.outage_types() == ["outage.opened", "outage.joined", "outage.resolved"]


def test_the_outage_notifies_its_members_and_each_records_the_link() -> None:
    worker = Worker()
    worker.fail(5)
    outputs = worker.feed(*worker.sent_signals)
    assert [(n.connector_id, n.incident_id) for n in outputs.notices] == [
        (f"SAP-{index}", f"SAP-{index}:1") for index in range(5)
    ]
    worker.pump()
    linked = [e for e in worker.log if e.type is EventType.OUTAGE_LINKED]
    assert [e.connector_id for e in linked] == [f"SAP-{index}" for index in range(5)]
    assert {e.attributes["outage_id"] for e in linked} == {f"{KEY}:1"}
    stored = worker.processor.store.get(b"SAP-0", 0)
    assert stored is not None
    assert load_state(stored)[0].record.outage_id == f"{KEY}:1"


def test_the_outage_state_is_in_the_table_and_the_scan_reads_its_head() -> None:
    worker = Worker()
    worker.fail(5)
    signals, worker.sent_signals = worker.sent_signals, []
    worker.feed(*signals)  # the outage's inputs only: its notices stay unsent
    stored = worker.processor.store.get(KEY.encode(), 0)
    assert stored is not None
    state, applied = load_outage(stored)
    assert state.record.outage_id == f"{KEY}:1"
    assert set(state.memory.failing) == {f"SAP-{index}:1" for index in range(5)}
    assert applied == worker.position
    assert load_head(stored) == (1, state.record.head_hash)
    scan = OwnedState()
    scan.add(0, KEY.encode(), stored)
    assert scan.connectors == {}  # no heartbeat grace for an outage
    assert {p: dict(Heads(h)) for p, h in scan.heads.items()} == {
        0: {KEY: (1, state.record.head_hash)}
    }


def test_re_sent_and_re_delivered_signals_change_nothing() -> None:
    worker = Worker()
    worker.fail(5)
    signals = list(worker.sent_signals)
    worker.pump()
    before = list(worker.log)
    worker.feed(*signals)  # re-derived after a crash: new positions, same episodes
    assert worker.log == before
    # the input last applied again (its offset re-delivered): skipped by position
    stored = worker.processor.store.get(KEY.encode(), 0)
    assert stored is not None
    applied = load_outage(stored)[1]
    item = Input(Unpacked(signals[-1], applied, "in/again", None, None), 0)
    skipped = worker.processor.counters["skipped_redeliveries"]
    worker.processor.process([item])
    assert worker.processor.counters["skipped_redeliveries"] == skipped + 1


def test_crash_repair_drops_outage_events_already_in_the_log() -> None:
    """The outage's events were written, its state was not: the signal comes again."""
    crashed = Worker()
    crashed.fail(5)
    signals = list(crashed.sent_signals)
    store_before = dict(crashed.processor.store.data)  # type: ignore[attr-defined]  # a DictStore
    position_before = crashed.position
    crashed.pump()
    logged = [e for e in crashed.log if e.connector_id == KEY]
    assert [e.type for e in logged] == [EventType.OUTAGE_OPENED]

    restarted = Worker(
        InputProcessor(parse_policy({}), DictStore(dict(store_before)), partitions=1),
        position=position_before,  # the same inputs again, at the same positions
    )
    restarted.processor.logged_ahead = {KEY: logged}
    repaired = restarted.feed(*signals)
    assert [e for e in restarted.log if e.connector_id == KEY] == []
    assert len(repaired.notices) == 5  # sent again: the crash may have lost them
    assert restarted.processor.counters["repaired_dropped"] == 1
    assert KEY not in restarted.processor.logged_ahead
    stored = restarted.processor.store.get(KEY.encode(), 0)
    assert stored is not None
    assert load_outage(stored)[0].record.head_hash == logged[-1].hash
    restarted.feed(_ping("SAP-5", False, T0 + 100))
    restarted.pump()
    joined = [e for e in restarted.log if e.connector_id == KEY]
    assert [(e.type, e.sequence, e.prev_hash) for e in joined] == [
        (EventType.OUTAGE_JOINED, 2, logged[-1].hash)
    ]


def test_an_admin_ack_of_an_outage_is_recorded_on_its_chain() -> None:
    """`connector-recovery ack outage:dependency:sap-prod:1` is answered on the outage's
    chain and stored with it; the outage goes on."""
    worker = Worker()
    worker.fail(5)
    worker.pump()
    worker.feed(_outage_command(AdminAction.ACKNOWLEDGE, "c-1"))
    acked = worker.log[-1]
    assert (acked.connector_id, acked.type) == (KEY, EventType.OUTAGE_ACKNOWLEDGED)
    assert acked.actor == "alice"
    assert acked.attributes["command_id"] == "c-1"
    stored = worker.processor.store.get(KEY.encode(), 0)
    assert stored is not None
    outage = load_outage(stored)[0].record
    assert (outage.sequence, outage.acknowledged_by) == (acked.sequence, "alice")
    # the outage goes on: a sixth member joins
    worker.feed(_ping("SAP-5", False, T0 + 2_000))
    worker.pump()
    assert worker.outage_types()[-1] == "outage.joined"


def test_an_admin_recover_of_an_outage_sends_each_failing_member_a_recover() -> None:
    worker = Worker()
    worker.fail(5)
    worker.pump()
    outputs = worker.feed(_outage_command(AdminAction.RECOVER, "c-2"))
    assert [(c.connector_id, c.command_id, c.actor) for c in outputs.member_commands] == [
        (f"SAP-{index}", f"c-2:SAP-{index}", "alice") for index in range(5)
    ]
    # read back from the inputs topic by the members' owner: a manual attempt each
    applied = worker.feed(*outputs.member_commands)
    started = [e for _key, e, _p in applied.events if e.type is EventType.RECOVERY_STARTED]
    assert [(e.connector_id, e.actor, e.mode) for e in started] == [
        (f"SAP-{index}", "alice", RecoveryMode.MANUAL) for index in range(5)
    ]


def _outage_command(action: AdminAction, command_id: str) -> AdminCommand:
    return AdminCommand(
        command_id=command_id,
        action=action,
        connector_id=KEY,
        incident_id=f"{KEY}:1",
        actor="alice",
        issued_at=T0 + 1_000,
    )


def test_a_tick_or_grace_for_an_outage_changes_nothing() -> None:
    worker = Worker()
    worker.fail(5)
    worker.pump()
    before = worker.processor.store.get(KEY.encode(), 0)
    outputs = worker.feed(Tick(connector_id=KEY, now=T0 + 60_000), Watch(connector_id=KEY, at=T0))
    assert (outputs.events, outputs.states, outputs.outages) == ([], {}, {})
    assert worker.processor.store.get(KEY.encode(), 0) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(-1, 10**9))
def test_an_outage_state_round_trips_through_the_table(script: list[Any], applied: int) -> None:
    for state in play_fleet(script, settle=False).outages.values():
        assert load_outage(dump_outage(state, applied)) == (state, applied)


def test_the_clock_paces_an_outages_releases_and_a_new_owner_resumes_them() -> None:
    """The dependency answers (a member recovers): the held members are released at most
    `release_per_s`, each on a tick of the outage's own deadline; a worker that takes the
    partition over schedules the rest from the stored state."""
    policy = parse_policy(
        {
            "dependencies": {"sap-prod": {"connectors": ["SAP-*"]}},
            "outages": {"release_per_s": 10},
        }
    )
    worker = Worker(InputProcessor(policy, DictStore(), partitions=1))
    worker.fail(6)
    worker.pump()
    held = [f"SAP-{i}" for i in range(1, 6)]
    for connector in held:
        stored = worker.processor.store.get(connector.encode(), 0)
        assert stored is not None
        assert load_state(stored)[0].record.restarts_held
    back = T0 + 30_000
    worker.feed(_ping("SAP-0", True, back))  # the probe
    worker.pump()
    # (SAP-1, released at once, is due for its attempt: the index holds connectors too)
    assert KEY not in worker.processor.deadlines.pop_due(back + 99)
    assert KEY in worker.processor.deadlines.pop_due(back + 100)
    worker.feed(Tick(connector_id=KEY, now=back + 250))
    worker.pump()
    released = [e for e in worker.log if e.type is EventType.OUTAGE_RELEASED]
    assert [(e.connector_id, e.occurred_at) for e in released] == [
        ("SAP-1", back),
        ("SAP-2", back + 100),
        ("SAP-3", back + 200),
    ]
    # another worker takes the partition over: the rest is scheduled from the table
    successor = InputProcessor(policy, DictStore(dict(worker.processor.store.data)), 1)  # type: ignore[attr-defined]  # a DictStore
    successor.schedule_outages({KEY: successor.store.get(KEY.encode(), 0) or b""})
    assert successor.deadlines.pop_due(back + 299) == []
    assert successor.deadlines.pop_due(back + 300) == [KEY]
