"""The processor's outputs over random batches of several connectors' inputs equal the
reference fold of `decide` (one input at a time, each connector's state carried along):
the same audit events and commands in the same order, and the same final states."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.processor import STATES_CACHED, DictStore, Input, InputProcessor
from agents.worker.statecodec import load_outage, load_state
from streams.decider import decide
from streams.models import (
    AdminAction,
    AdminCommand,
    AuditEvent,
    Command,
    DeciderInput,
    EventType,
    HealthPing,
    HealthStatus,
    MemberChange,
    OutageSignal,
    Tick,
    Watch,
)
from streams.policy import parse_policy
from streams.state import ConnectorState
from tests.core.test_properties import POLICY

CONNECTORS = ["A", "B", "C"]
POLICY_ = parse_policy(POLICY)

step = st.tuples(
    st.sampled_from(CONNECTORS),
    st.integers(0, 90),  # seconds later
    st.sampled_from(["healthy", "unhealthy", "tick", "watch", "late", "ack", "retire"]),
)


def inputs_of(script: list[tuple[str, int, str]]) -> list[DeciderInput]:
    now = T0
    out: list[DeciderInput] = []
    for index, (connector, seconds, kind) in enumerate(script):
        now += seconds * 1000
        if kind in {"healthy", "unhealthy", "late"}:
            healthy = kind == "healthy"
            out.append(
                HealthPing(
                    connector_id=connector,
                    tenant_id="acme",
                    status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
                    failure=None if healthy else "timeout",
                    checked_at=now - 10_000 if kind == "late" else now,
                )
            )
        elif kind == "tick":
            out.append(Tick(connector_id=connector, now=now))
        elif kind == "watch":
            out.append(Watch(connector_id=connector, tenant_id="acme", at=now))
        else:
            action = AdminAction.ACKNOWLEDGE if kind == "ack" else AdminAction.RETIRE
            out.append(
                AdminCommand(
                    command_id=f"cmd-{index}",
                    action=action,
                    connector_id=connector,
                    actor="alice",
                    issued_at=now,
                )
            )
    return out


def reference(
    inputs: list[DeciderInput],
) -> tuple[list[AuditEvent], list[Command], dict[str, ConnectorState]]:
    states: dict[str, ConnectorState] = {}
    events: list[AuditEvent] = []
    commands: list[Command] = []
    for position, message in enumerate(inputs):
        key = message.connector_id
        decision = decide(
            states.get(key) or ConnectorState.new(key), message, POLICY_, f"in/{position}"
        )
        states[key] = decision.state
        events.extend(decision.events)
        commands.extend(decision.commands)
    return events, commands, states


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(step, max_size=80),
    st.lists(st.integers(1, 12), min_size=1),
    st.sampled_from([1, 2, STATES_CACHED]),  # a bound below the fleet evicts as it goes
)
def test_outputs_over_random_batches_equal_the_reference_fold(
    script: list[tuple[str, int, str]], batch_sizes: list[int], states_cached: int
) -> None:
    inputs = inputs_of(script)
    store = DictStore()
    processor = InputProcessor(POLICY_, store, partitions=1, states_cached=states_cached)
    items = [
        Input(Unpacked(message, position, f"in/{position}", None, None), 0)
        for position, message in enumerate(inputs)
    ]
    events: list[AuditEvent] = []
    commands: list[Command] = []
    start = 0
    sizes = iter(batch_sizes * (len(items) + 1))
    while start < len(items):
        end = start + next(sizes)
        outputs = processor.process(items[start:end])
        processor.write(outputs)
        events.extend(event for _key, event, _partition in outputs.events)
        commands.extend(command for _key, command in outputs.commands)
        start = end
    expected_events, expected_commands, expected_states = reference(inputs)
    assert events == expected_events
    assert commands == expected_commands
    for connector, state in expected_states.items():
        stored = store.data.get(connector.encode())
        got = ConnectorState.new(connector) if stored is None else load_state(stored)[0]
        assert (got.record, got.memory) == (state.record, state.memory)
        assert processor.liveness_of(connector) == (state.last_checked_at, state.heartbeat_deadline)


def test_a_redelivered_input_is_skipped_and_its_state_written_again() -> None:
    """Crash repair case (b): the stored state already holds the input's position. Nothing
    is decided again, but the state is written again as it is: after a kill the local
    store can hold a write its changelog never got, and only a write puts it there."""
    store = DictStore()
    processor = InputProcessor(POLICY_, store, partitions=1)
    ping = HealthPing(connector_id="A", status=HealthStatus.UNHEALTHY, checked_at=T0)
    batch = [Input(Unpacked(ping, 7, "in/7", None, None), 0)]
    first = processor.process(batch)
    processor.write(first)
    assert first.states  # the unhealthy ping changed the stored state
    written = store.get(b"A", 0)
    restarted = InputProcessor(POLICY_, store, partitions=1)
    again = restarted.process(batch)
    assert (again.events, again.commands) == ([], [])
    assert restarted.counters["skipped_redeliveries"] == 1
    assert [(key, value) for key, value, _partition in again.state_writes()] == [(b"A", written)]


def test_an_outage_restored_from_a_changelog_behind_its_store_keeps_its_members() -> None:
    """R1 at fleet scale: a worker killed after its store took an outage's new state and
    before the changelog got it; restarted on that store, it skips the re-delivered signal;
    restarted once more with its store wiped, it is back to what the changelog holds, and
    the signal's offset committed past: the member it joined was lost, and the next
    signal's decision diverged from the log. Written again on the skip, it is kept."""
    policy = parse_policy({"outages": {"min_connectors": 2, "window_s": 60}})
    local, changelog = DictStore(), DictStore()
    key, outage = b"outage:tenant:t/failure:timeout", "outage:tenant:t/failure:timeout"

    def signal(member: str, position: int) -> Input:
        message = OutageSignal(
            connector_id=outage,
            group="tenant:t/failure:timeout",
            member_id=member,
            incident_id=f"{member}:1",
            change=MemberChange.FAILED,
            tenant_id="t",
            failure="timeout",
            at=T0 + position,
        )
        return Input(Unpacked(message, position, f"in/{position}", None, None), 0)

    first = InputProcessor(policy, local, partitions=1)
    opened = first.process([signal("A", 1), signal("B", 2)])
    first.write(opened)
    opening = local.get(key, 0)
    assert opening is not None
    changelog.put(key, opening, 0)  # the changelog had the opening
    joined = first.process([signal("C", 3)])
    first.write(joined)  # the store took C's join; the changelog never did (killed)
    assert [e.type for _k, e, _p in joined.events] == [EventType.OUTAGE_JOINED]
    restarted = InputProcessor(policy, local, partitions=1)
    again = restarted.process([signal("C", 3)])  # re-delivered: skipped
    assert again.events == []
    for written_key, value, partition in again.state_writes():
        changelog.put(written_key, value, partition)  # what its changelog now holds
    wiped = InputProcessor(policy, changelog, partitions=1)  # store rebuilt from it
    after = wiped.process([signal("D", 4)])  # C's offset is committed past
    stored = changelog.get(key, 0)
    assert stored is not None
    state = load_outage(stored)[0]
    assert set(state.record.members) >= {"A:1", "B:1", "C:1"}
    assert [e.type for _k, e, _p in after.events] == [EventType.OUTAGE_JOINED]
    assert after.events[0][1].sequence == joined.events[0][1].sequence + 1


def test_a_repaired_connector_leaves_the_log_ahead_once_it_has_caught_up() -> None:
    """Crash repair case (a): the events an input wrote before its state reached the table
    are re-derived, not sent again; then the connector is no longer 'ahead', so its steady
    pings (and every other connector's) go back to the fast path."""
    ping = HealthPing(connector_id="A", status=HealthStatus.UNHEALTHY, checked_at=T0)
    batch = [Input(Unpacked(ping, 7, "in/7", None, None), 0)]
    crashed = InputProcessor(parse_policy({}), DictStore(), partitions=1)
    logged = [event for _key, event, _partition in crashed.process(batch).events]
    assert logged  # the state of this batch never reached the table
    restarted = InputProcessor(parse_policy({}), DictStore(), partitions=1)
    restarted.logged_ahead = {"A": logged}
    outputs = restarted.process(batch)
    assert outputs.events == []  # already in the log
    assert outputs.states  # the state catches up with the log
    assert restarted.logged_ahead == {}


def test_a_repaired_state_evicted_before_it_is_written_is_read_from_the_repairs() -> None:
    """A repaired state lives in the processor alone until its partition's next batch
    writes it: evicting its parsed copy must not make the next input read the store's."""
    processor = InputProcessor(POLICY_, DictStore(), partitions=1, states_cached=1)
    repaired = ConnectorState.new("A")._replace(
        record=ConnectorState.new("A").record._replace(sequence=5, head_hash="ab" * 32)
    )
    processor.repaired(0, repaired, -1)
    for position, connector in enumerate(["C", "D"]):  # misses past the bound: A is evicted
        ping = HealthPing(connector_id=connector, status=HealthStatus.HEALTHY, checked_at=T0)
        processor.process([Input(Unpacked(ping, position, f"in/{position}", None, None), 0)])
    assert processor.counters["states_evicted"] >= 1
    ping = HealthPing(connector_id="A", status=HealthStatus.HEALTHY, checked_at=T0)
    outputs = processor.process([Input(Unpacked(ping, 9, "in/9", None, None), 0)])
    assert outputs.states[b"A"].state.record.sequence == 5


def test_a_ping_older_than_the_stored_state_is_late_after_a_restart() -> None:
    """A router forwards again, after a crash, pings the worker had applied: the new
    process holds no liveness, and the stored state's last ping time is what makes such an
    old unhealthy ping late instead of a second detection (R1 at fleet scale)."""
    store = DictStore()
    policy = parse_policy({})  # a failure is one unhealthy ping
    before = InputProcessor(policy, store, partitions=1)
    failing = HealthPing(
        connector_id="A", status=HealthStatus.UNHEALTHY, failure="timeout", checked_at=T0
    )
    healthy = HealthPing(connector_id="A", status=HealthStatus.HEALTHY, checked_at=T0 + 10_000)
    kinds = []
    for position, ping in enumerate([failing, healthy]):
        outputs = before.process([Input(Unpacked(ping, position, f"in/{position}", None, None), 0)])
        before.write(outputs)
        kinds += [event.type for _key, event, _partition in outputs.events]
    assert EventType.FAILURE_DETECTED in kinds
    after = InputProcessor(policy, store, partitions=1)  # a restart: no liveness in memory
    again = Input(Unpacked(failing, 99, "in/99", None, None), 0)  # forwarded once more
    outputs = after.process([again])
    assert (outputs.events, outputs.commands) == ([], [])
    assert after.counters["late_pings"] == 1
