"""Outages in the pure core (docs/outages.md): the group of a failing connector, the
lifecycle of an outage as chained audit events, idempotence on re-sent signals, and
grouping as a pure function of the events (replay gives the same outages)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing.driver import T0, Driver
from streams.evidence import (
    CommandRejected,
    FailureDetected,
    OutageAcknowledged,
    OutageJoined,
    OutageLinked,
    OutageOpened,
    OutageRecoveryRequested,
    OutageResolved,
    read,
)
from streams.evolve import fold
from streams.grouping import group_of, outage_key
from streams.models import (
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
    RecoveryMode,
    Tick,
)
from streams.outages import (
    OutageMemory,
    OutageRecord,
    OutageState,
    decide_notification_result,
    decide_outage,
    decide_outage_command,
    decide_outage_tick,
    fold_outage,
    member_signals,
    outage_deadline,
)
from streams.policy import Policy, parse_policy
from streams.state import Phase, Record
from streams.verify import verify_events

CHAIN_FINDINGS = {
    "hash_mismatch",
    "chain_break",
    "sequence_gap",
    "out_of_order",
    "conflicting_duplicate",
    "bad_event_id",
    "malformed_evidence",
}
OUTAGE_TYPES = {
    EventType.OUTAGE_OPENED,
    EventType.OUTAGE_JOINED,
    EventType.OUTAGE_RESOLVED,
    EventType.OUTAGE_ACKNOWLEDGED,
    EventType.OUTAGE_RECOVERY_REQUESTED,
}


@dataclass
class Fleet:
    """Connectors of one policy, each with its own decider, and the outages their
    signals feed, in the order the signals are produced (one worker, one partition)."""

    policy: Policy = field(default_factory=lambda: parse_policy({}))
    connectors: dict[str, Driver] = field(default_factory=dict)
    outages: dict[str, OutageState] = field(default_factory=dict)
    log: list[AuditEvent] = field(default_factory=list)  # every event, in the order written
    signals: list[OutageSignal] = field(default_factory=list)
    notices: list[OutageNotice] = field(default_factory=list)
    pages: list[NotificationRequest] = field(default_factory=list)  # the outages' own

    @classmethod
    def with_policy(cls, document: dict[str, Any]) -> Fleet:
        return cls(policy=parse_policy(document))

    def connector(self, connector_id: str, tenant_id: str | None = "acme") -> Driver:
        if connector_id not in self.connectors:
            self.connectors[connector_id] = Driver(connector_id, tenant_id, self.policy)
        return self.connectors[connector_id]

    def ping(
        self,
        connector_id: str,
        healthy: bool,
        at: int,
        *,
        failure: str = "timeout",
        tenant_id: str | None = "acme",
        dependency: str | None = None,
    ) -> list[AuditEvent]:
        driver = self.connector(connector_id, tenant_id)
        driver.now = max(driver.now, at)
        return self._apply(
            driver, lambda: driver.ping(healthy, failure=failure, dependency=dependency)
        )

    def admin(self, connector_id: str, action: AdminAction, incident: str) -> list[AuditEvent]:
        driver = self.connectors[connector_id]
        return self._apply(driver, lambda: driver.admin(action, incident=incident))

    def _apply(self, driver: Driver, step: Any) -> list[AuditEvent]:
        before = driver.state.record
        events: list[AuditEvent] = step()
        self.log.extend(events)
        produced: list[AuditEvent] = []
        for signal in member_signals(before, events):
            self.signals.append(signal)
            produced.extend(self.apply_signal(signal))
        return produced

    def apply_signal(self, signal: OutageSignal) -> list[AuditEvent]:
        """The outage's events; its notices are applied at once by the members this fleet
        drives (a replayed fleet drives none: their events are in the log it replays)."""
        key = signal.connector_id
        state = self.outages.get(key) or OutageState.new(key)
        decision = decide_outage(state, signal, self.policy, f"in/{len(self.signals)}")
        self.outages[key] = decision.state
        self.log.extend(decision.events)
        self.notices.extend(decision.notices)
        self.pages.extend(decision.commands)
        for notice in decision.notices:
            member = self.connectors.get(notice.connector_id)
            if member is not None:
                self.log.extend(member.feed(notice))
        return list(decision.events)

    def outage_admin(
        self, action: AdminAction, target: str, at: int, actor: str = "alice"
    ) -> list[AuditEvent]:
        """An admin's command of an outage (`target`: its id, as the CLI sends it); the
        notices and the members' commands it sends applied at once by the members."""
        key = target.rpartition(":")[0] if target.rpartition(":")[2].isdigit() else target
        command = AdminCommand(
            command_id=f"cmd-{len(self.log)}",
            action=action,
            connector_id=key,
            incident_id=None if key == target else target,
            actor=actor,
            issued_at=at,
        )
        state = self.outages.get(key) or OutageState.new(key)
        decision = decide_outage_command(state, command, self.policy, f"admin/{len(self.log)}")
        self.outages[key] = decision.state
        self.log.extend(decision.events)
        self.notices.extend(decision.notices)
        self.pages.extend(decision.commands)
        for notice in decision.notices:
            self.log.extend(self.connectors[notice.connector_id].feed(notice))
        for member_command in decision.member_commands:
            driver = self.connectors[member_command.connector_id]
            driver.now = max(driver.now, at)
            self._apply(driver, lambda c=member_command, d=driver: d.feed(c))
        return list(decision.events)

    def tick_outage(self, key: str, now: int) -> list[OutageNotice]:
        """Time passes for an outage (its paced releases); its notices applied at once."""
        decision = decide_outage_tick(
            self.outages[key], Tick(connector_id=key, now=now), self.policy
        )
        self.outages[key] = decision.state
        self.notices.extend(decision.notices)
        for notice in decision.notices:
            self.log.extend(self.connectors[notice.connector_id].feed(notice))
        return list(decision.notices)

    def outage_events(self) -> list[AuditEvent]:
        return [e for e in self.log if e.type in OUTAGE_TYPES]


def types(events: list[AuditEvent]) -> list[str]:
    return [e.type.value for e in events]


# -- which group ------------------------------------------------------------------------------


def test_the_group_is_the_pings_dependency_else_the_policys_else_tenant_and_failure() -> None:
    policy = parse_policy({"dependencies": {"sap-prod": {"connectors": ["SAP-*"]}}})
    assert group_of("SAP-AR", "acme", "timeout", "erp-x", policy) == "dependency:erp-x"
    assert group_of("SAP-AR", "acme", "timeout", None, policy) == "dependency:sap-prod"
    assert group_of("SAP-AR", "acme", "timeout", "  ", policy) == "dependency:sap-prod"
    assert group_of("CRM", "acme", "timeout", None, policy) == "tenant:acme/failure:timeout"
    assert group_of("CRM", None, None, None, policy) == "tenant:_platform/failure:unknown"
    long = group_of("CRM", "acme", "x" * 500, None, policy)
    assert len(outage_key(long)) < 249
    assert long != group_of("CRM", "acme", "x" * 499 + "y", None, policy)


def test_every_detection_records_its_group() -> None:
    fleet = Fleet.with_policy({"dependencies": {"sap-prod": {"connectors": ["SAP-*"]}}})
    fleet.ping("SAP-AR", False, T0)
    fleet.ping("SFDC", False, T0, dependency="crm-eu")
    fleet.ping("NETSUITE", False, T0, failure="auth")
    groups = [
        read(FailureDetected, e.attributes).group
        for e in fleet.log
        if e.type is EventType.FAILURE_DETECTED
    ]
    assert groups == ["dependency:sap-prod", "dependency:crm-eu", "tenant:acme/failure:auth"]


# -- the lifecycle ----------------------------------------------------------------------------


def _erp_down(fleet: Fleet, count: int, spacing_ms: int = 100) -> None:
    for index in range(count):
        fleet.ping(f"SAP-{index:03d}", False, T0 + index * spacing_ms, dependency="sap-prod")


def test_five_failures_of_one_dependency_open_one_outage_and_later_ones_join() -> None:
    fleet = Fleet()
    _erp_down(fleet, 4)
    assert fleet.outage_events() == []
    _erp_down(fleet, 7)  # the first four again are steady failures: nothing new
    events = fleet.outage_events()
    assert types(events) == ["outage.opened", "outage.joined", "outage.joined"]
    opened = events[0]
    assert opened.connector_id == "outage:dependency:sap-prod"
    assert opened.event_id == "outage:dependency:sap-prod:1"
    assert {e.incident_id for e in events} == {opened.event_id}
    assert opened.tenant_id is None  # a dependency's outage may span tenants
    view = read(OutageOpened, opened.attributes)
    assert view.connectors == tuple(f"SAP-{i:03d}" for i in range(5))
    assert view.incidents == tuple(f"SAP-{i:03d}:1" for i in range(5))
    assert read(OutageJoined, events[2].attributes).connector == "SAP-006"


def test_the_outage_resolves_when_its_last_member_has_recovered() -> None:
    fleet = Fleet()
    _erp_down(fleet, 6)
    for index in range(6):
        before = len(fleet.outage_events())
        fleet.ping(f"SAP-{index:03d}", True, T0 + 20_000 + index, dependency="sap-prod")
        assert len(fleet.outage_events()) == before + (index == 5)
    resolved = fleet.outage_events()[-1]
    assert resolved.type is EventType.OUTAGE_RESOLVED
    view = read(OutageResolved, resolved.attributes)
    assert (view.episodes, view.recovered, view.left) == (6, 6, 0)
    assert view.duration_ms == resolved.occurred_at - fleet.outage_events()[0].occurred_at
    assert fleet.outages["outage:dependency:sap-prod"].record.outage_id is None


def test_a_member_closed_by_an_admin_leaves_the_outage() -> None:
    fleet = Fleet()
    _erp_down(fleet, 5)
    for index in range(4):
        fleet.ping(f"SAP-{index:03d}", True, T0 + 10_000, dependency="sap-prod")
    fleet.admin("SAP-004", AdminAction.RETIRE, "SAP-004:1")
    resolved = read(OutageResolved, fleet.outage_events()[-1].attributes)
    assert (resolved.recovered, resolved.left) == (4, 1)


def test_two_unrelated_failures_in_the_same_minute_open_no_outage() -> None:
    fleet = Fleet()
    fleet.ping("SAP-AR", False, T0, failure="timeout")
    fleet.ping("SFDC", False, T0 + 1000, failure="auth", tenant_id="globex")
    for index in range(3):
        fleet.ping(f"X-{index}", False, T0 + 2000 + index, failure=f"kind-{index}")
    assert fleet.outage_events() == []


def test_failures_further_apart_than_the_window_open_no_outage() -> None:
    fleet = Fleet.with_policy({"outages": {"min_connectors": 3, "window_s": 10}})
    for index in range(5):
        fleet.ping(f"C-{index}", False, T0 + index * 6_000)
    assert fleet.outage_events() == []
    fleet.ping("C-5", False, T0 + 25_000)  # C-3 (18 s), C-4 (24 s), C-5 (25 s)
    opened = read(OutageOpened, fleet.outage_events()[0].attributes)
    assert opened.connectors == ("C-3", "C-4", "C-5")
    assert opened.window_ms == 10_000


def test_without_a_dependency_one_tenant_and_failure_kind_group() -> None:
    fleet = Fleet()
    for index in range(5):
        fleet.ping(f"A-{index}", False, T0 + index, failure="http_503")
    opened = fleet.outage_events()[0]
    assert opened.connector_id == "outage:tenant:acme/failure:http_503"
    assert opened.tenant_id == "acme"


def test_the_outage_links_each_member_on_its_own_chain() -> None:
    """Opening answers each of the first members with a notice, each join the joiner; each
    member records the link as an event of its own chain and in its record."""
    fleet = Fleet()
    _erp_down(fleet, 4)
    assert fleet.notices == []
    _erp_down(fleet, 6)
    outage_id = "outage:dependency:sap-prod:1"
    assert [(n.connector_id, n.incident_id, n.outage_id) for n in fleet.notices] == [
        (f"SAP-{i:03d}", f"SAP-{i:03d}:1", outage_id) for i in range(6)
    ]
    for index in range(6):
        member = fleet.connectors[f"SAP-{index:03d}"]
        (linked,) = member.of_type(EventType.OUTAGE_LINKED)
        assert linked.incident_id == f"SAP-{index:03d}:1"
        view = read(OutageLinked, linked.attributes)
        assert (view.outage_id, view.group) == (outage_id, "dependency:sap-prod")
        assert member.state.record.outage_id == outage_id
    # a new episode of a member, while the outage is open, joins it and is linked anew
    fleet.ping("SAP-000", True, T0 + 10_000, dependency="sap-prod")
    fleet.ping("SAP-000", False, T0 + 200_000, dependency="sap-prod")
    member = fleet.connectors["SAP-000"]
    assert [e.incident_id for e in member.of_type(EventType.OUTAGE_LINKED)] == [
        "SAP-000:1",
        "SAP-000:4",
    ]


def test_a_notice_for_an_episode_that_ended_changes_nothing() -> None:
    fleet = Fleet()
    _erp_down(fleet, 5)
    member = fleet.connectors["SAP-000"]
    fleet.ping("SAP-000", True, T0 + 10_000, dependency="sap-prod")
    assert member.feed(fleet.notices[0]) == []  # a late notice: the episode recovered
    fleet.ping("SAP-000", False, T0 + 20_000, dependency="sap-prod")
    assert member.feed(fleet.notices[0]) == []  # ... and another episode began
    assert member.feed(fleet.notices[-1]) == []  # that one's notice again: applied already
    linked = member.of_type(EventType.OUTAGE_LINKED)
    assert [e.incident_id for e in linked] == ["SAP-000:1", "SAP-000:4"]


def test_a_re_sent_signal_changes_nothing() -> None:
    fleet = Fleet()
    _erp_down(fleet, 6)
    fleet.ping("SAP-000", True, T0 + 10_000, dependency="sap-prod")
    before = list(fleet.log)
    for signal in list(fleet.signals):
        assert fleet.apply_signal(signal) == []
    assert fleet.log == before


def test_a_second_outage_of_the_group_gets_an_id_of_its_own() -> None:
    fleet = Fleet()
    _erp_down(fleet, 5)
    for index in range(5):
        fleet.ping(f"SAP-{index:03d}", True, T0 + 10_000, dependency="sap-prod")
    for index in range(5):
        fleet.ping(f"SAP-{index:03d}", False, T0 + 20_000 + index, dependency="sap-prod")
    opened = [e for e in fleet.outage_events() if e.type is EventType.OUTAGE_OPENED]
    assert [e.event_id for e in opened] == [
        "outage:dependency:sap-prod:1",
        "outage:dependency:sap-prod:3",  # opened, resolved, opened
    ]
    assert fleet.outages["outage:dependency:sap-prod"].record.outages == 2


def test_outage_chains_verify_and_tampering_is_found() -> None:
    fleet = Fleet()
    _erp_down(fleet, 6)
    for index in range(6):
        fleet.ping(f"SAP-{index:03d}", True, T0 + 10_000, dependency="sap-prod")
    assert [f for f in verify_events(fleet.log) if not f.benign] == []
    opened = fleet.outage_events()[0]
    tampered = opened.model_copy(update={"attributes": {**opened.attributes, "group": "other"}})
    log = [tampered if e is opened else e for e in fleet.log]
    assert {f.kind for f in verify_events(log)} == {"hash_mismatch"}


# -- replay -----------------------------------------------------------------------------------

connector_ids = [f"C-{index}" for index in range(5)]
steps = st.lists(
    st.tuples(
        st.sampled_from(connector_ids),
        st.sampled_from([False, False, True]),  # healthy
        st.sampled_from(["timeout", "timeout", "auth"]),
        st.sampled_from([None, "sap-prod", "sap-prod"]),
        st.integers(0, 2_000) | st.integers(0, 40_000),  # ms after the previous step
    ),
    max_size=80,
)


def play_fleet(script: list[tuple[str, bool, str, str | None, int]], settle: bool) -> Fleet:
    fleet = Fleet.with_policy({"outages": {"min_connectors": 3, "window_s": 30}})
    at = T0
    for connector_id, healthy, failure, dependency, gap in script:
        at += gap
        fleet.ping(connector_id, healthy, at, failure=failure, dependency=dependency)
    if settle:  # every connector healthy long enough to stop flapping and recover
        for _ in range(30):
            at += 1_000
            for connector_id in sorted(fleet.connectors):
                fleet.ping(connector_id, True, at)
    return fleet


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.booleans())
def test_grouping_is_a_pure_function_of_the_events(script: list[Any], settle: bool) -> None:
    """Replaying the connectors' audit events alone re-derives the same signals, and they
    give the same outage events, byte for byte; each outage's record is the fold of its
    events."""
    live = play_fleet(script, settle)
    records: dict[str, Record] = {}
    replayed = Fleet(policy=live.policy)
    for event in live.log:
        if event.type in OUTAGE_TYPES:
            continue
        before = records.get(event.connector_id) or Record(event.connector_id)
        records[event.connector_id] = fold(before, [event])
        for signal in member_signals(before, [event]):
            replayed.signals.append(signal)
            replayed.apply_signal(signal)
    assert replayed.signals == live.signals
    assert replayed.outage_events() == live.outage_events()
    for key, state in live.outages.items():
        own = [e for e in live.log if e.connector_id == key]
        assert fold_outage(OutageRecord(key), own) == state.record
    # a member's record, links included, is the fold of its own events
    for connector_id, member in live.connectors.items():
        own = [e for e in live.log if e.connector_id == connector_id]
        assert own == member.events
        assert fold(Record(connector_id), own) == member.state.record
    # no clock is played here, so deadlines pass unanswered; the chains must be intact
    assert [f for f in verify_events(live.log) if f.kind in CHAIN_FINDINGS] == []


@settings(max_examples=100, deadline=None)
@given(steps)
def test_every_outage_opens_once_and_resolves_after_its_members(script: list[Any]) -> None:
    live = play_fleet(script, settle=True)
    for state in live.outages.values():
        own = [e for e in live.log if e.connector_id == state.record.outage_key]
        kinds = [e.type for e in own]
        # opened, joined*, resolved, repeated; an open one last
        open_now = False
        for kind in kinds:
            assert (kind is EventType.OUTAGE_OPENED) is not open_now
            open_now = kind is not EventType.OUTAGE_RESOLVED
        assert not open_now
        assert state.record.outage_id is None
        assert state.memory == OutageMemory()


def test_an_outage_of_ten_thousand_members_costs_each_join_little() -> None:
    """Joining is O(log n) in the members (a persistent map): the 10,000th join costs about
    what the 1,000th does, where copying a set of members made a storm quadratic."""
    policy = parse_policy({})
    state = OutageState.new("outage:tenant:acme:timeout")

    def joins(first: int, count: int) -> float:
        nonlocal state
        began = time.perf_counter()
        for index in range(first, first + count):
            signal = OutageSignal(
                connector_id="outage:tenant:acme:timeout",
                group="tenant:acme:timeout",
                member_id=f"C-{index}",
                incident_id=f"C-{index}:1",
                change=MemberChange.FAILED,
                tenant_id="acme",
                failure="timeout",
                at=T0 + index,
            )
            state = decide_outage(state, signal, policy).state
        return time.perf_counter() - began

    # the fastest of three slices of 300 joins each, early and late: a busy machine slows a
    # slice, not all three
    early = min(joins(start, 300) for start in (0, 300, 600))
    joins(900, 8_200)
    late = min(joins(start, 300) for start in (9_100, 9_400, 9_700))
    assert len(state.record.members) == 10_000
    assert late < 4 * early, (early, late)  # a set copy per join: ~15x here


# -- paged once (docs/outages.md) -------------------------------------------------------------

ERP_POLICY = {"dependencies": {"sap-prod": {"connectors": ["SAP-*"]}}}


def connector_pages(fleet: Fleet) -> list[NotificationRequest]:
    return [page for member in fleet.connectors.values() for page in member.notifications()]


def test_an_outage_pages_the_admin_once_and_each_tenant_once_and_its_members_page_nobody() -> None:
    fleet = Fleet.with_policy(ERP_POLICY)
    for index in range(8):
        tenant = "acme" if index % 2 else "globex"
        fleet.ping(f"SAP-{index}", False, T0 + index * 100, tenant_id=tenant)
    assert connector_pages(fleet) == []  # every failure's page held for the group wait
    assert [(p.target, p.level, p.notification_kind) for p in fleet.pages] == [
        ("platform_admin", 0, NotificationKind.OUTAGE_OPENED),
        ("tenant:globex", -1, NotificationKind.OUTAGE_OPENED),
        ("tenant:acme", -1, NotificationKind.OUTAGE_OPENED),
    ]
    admin, _globex, acme = fleet.pages
    assert admin.summary == (
        "Outage of dependency:sap-prod: 5 connectors failing (SAP-0, SAP-1, SAP-2, SAP-3, SAP-4)"
    )
    assert acme.tenant_id == "acme"
    assert "(SAP-1, SAP-3)" in acme.summary
    assert {p.incident_id for p in fleet.pages} == {"outage:dependency:sap-prod:1"}
    for index in range(8):
        member = fleet.connectors[f"SAP-{index}"]
        (suppressed,) = member.of_type(EventType.NOTIFICATION_SUPPRESSED)
        assert suppressed.attributes["reason"] == "outage"
        assert suppressed.attributes["outage_id"] == "outage:dependency:sap-prod:1"
        assert suppressed.attributes["notification_kind"] == "failure_detected"
        assert member.state.record.notify_at is None  # nothing left to release
        member.advance(120)
        member.tick()
    assert connector_pages(fleet) == []
    assert not [e for e in fleet.log if e.type is EventType.NOTIFICATION_RELEASED]


def test_a_failure_no_outage_links_is_paged_after_the_group_wait() -> None:
    fleet = Fleet.with_policy({**ERP_POLICY, "outages": {"group_wait_s": 15}})
    fleet.ping("SAP-1", False, T0)
    member = fleet.connectors["SAP-1"]
    (detected,) = member.of_type(EventType.FAILURE_DETECTED)
    assert read(FailureDetected, detected.attributes).notify_at == T0 + 15_000
    member.now = T0 + 14_999
    member.tick()
    assert member.notifications() == []
    member.now = T0 + 15_000
    released = member.tick()[0]
    assert released.type is EventType.NOTIFICATION_RELEASED
    assert [(p.target, p.notification_kind, p.cause_event_id) for p in member.notifications()] == [
        ("platform_admin", "failure_detected", released.event_id),
        ("tenant:acme", "failure_detected", released.event_id),
    ]
    assert member.notifications()[0].dedup_key == "SAP-1:1:failure_detected:platform_admin"
    member.advance(60)
    later = member.tick()  # attempts and their timeouts go on; the page is released once
    assert EventType.NOTIFICATION_RELEASED not in {e.type for e in later}
    assert fold(Record("SAP-1"), member.events) == member.state.record


def test_a_failure_that_recovers_within_the_group_wait_is_never_paged() -> None:
    fleet = Fleet.with_policy(ERP_POLICY)
    fleet.ping("SAP-1", False, T0)
    fleet.ping("SAP-1", True, T0 + 3_000)
    member = fleet.connectors["SAP-1"]
    member.now = T0 + 60_000
    member.tick()
    assert member.notifications() == []  # nor its recovery: nobody heard of the failure


def test_a_linked_members_incident_pages_nobody_but_says_why() -> None:
    fleet = Fleet.with_policy({**ERP_POLICY, "defaults": {"max_retries": 0}})
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    member = fleet.connectors["SAP-0"]
    assert EventType.INCIDENT_OPENED in {e.type for e in member.events}
    # max_retries 0 opens the incident at detection, before any link: paged as before
    assert {p.notification_kind for p in member.notifications()} == {"incident_opened"}
    member.advance(600)
    member.tick()  # the incident's escalation timer, while linked
    suppressed = [
        e.attributes["notification_kind"]
        for e in member.of_type(EventType.NOTIFICATION_SUPPRESSED)
        if e.attributes["reason"] == "outage"
    ]
    assert "failure_detected" in suppressed
    assert {p.notification_kind for p in member.notifications()} == {"incident_opened"}


def test_the_resolved_outage_sends_one_closing_notification_per_audience() -> None:
    fleet = Fleet.with_policy(ERP_POLICY)
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    fleet.ping("SAP-9", False, T0 + 100, tenant_id="globex")  # a tenant joining later
    assert [p.target for p in fleet.pages] == ["platform_admin", "tenant:acme", "tenant:globex"]
    for index in [*range(5), 9]:
        fleet.ping(f"SAP-{index}", True, T0 + 30_000)
    closing = fleet.pages[3:]
    assert [(p.target, p.notification_kind) for p in closing] == [
        ("platform_admin", "outage_resolved"),
        ("tenant:acme", "outage_resolved"),
        ("tenant:globex", "outage_resolved"),
    ]
    assert "6 failure episodes, 6 recovered" in closing[0].summary
    # the members' own recovery pages are suppressed too: the outage closes for them
    assert connector_pages(fleet) == []


def test_a_failed_outage_page_escalates_and_a_re_delivered_outcome_changes_nothing() -> None:
    fleet = Fleet.with_policy(ERP_POLICY)
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    key = "outage:dependency:sap-prod"
    tenant_page = fleet.pages[1]

    def outcome(page: NotificationRequest, delivered: bool) -> NotificationResult:
        return NotificationResult(
            dedup_key=page.dedup_key,
            connector_id=key,
            incident_id=page.incident_id,
            target=page.target,
            level=page.level,
            delivered=delivered,
            detail=None if delivered else "HTTP 503",
            finished_at=T0 + 2_000,
        )

    decision = decide_notification_result(
        fleet.outages[key], outcome(tenant_page, False), fleet.policy
    )
    (failed,) = decision.events
    assert (failed.type, failed.connector_id) == (EventType.NOTIFICATION_FAILED, key)
    (escalation,) = decision.commands
    assert (escalation.target, escalation.level) == ("platform_admin", 0)
    assert escalation.notification_kind is NotificationKind.INCIDENT_ESCALATED
    assert escalation.cause_event_id == failed.event_id
    state = decision.state
    again = decide_notification_result(state, outcome(tenant_page, False), fleet.policy)
    assert (again.events, again.commands) == ((), ())
    sent = decide_notification_result(state, outcome(fleet.pages[0], True), fleet.policy)
    assert [e.type for e in sent.events] == [EventType.NOTIFICATION_SENT]
    assert sent.commands == ()
    own = [e for e in fleet.log if e.connector_id == key] + [failed, *sent.events]
    assert fold_outage(OutageRecord(key), own) == sent.state.record
    assert [f for f in verify_events(own) if f.kind in CHAIN_FINDINGS] == []
    # the tenant's closing page fails too: a second escalation, a page of its own (the
    # notifier drops a dedup key it has seen)
    closing = tenant_page.model_copy(
        update={"dedup_key": tenant_page.dedup_key.replace("outage_opened", "outage_resolved")}
    )
    assert closing.dedup_key != tenant_page.dedup_key
    later = decide_notification_result(sent.state, outcome(closing, False), fleet.policy)
    (second,) = later.commands
    assert second.notification_kind is NotificationKind.INCIDENT_ESCALATED
    assert second.dedup_key != escalation.dedup_key


def test_without_dependencies_or_outages_in_the_policy_connectors_page_as_before() -> None:
    fleet = Fleet()  # outages form (tenant and failure kind) and link, but do not page
    for index in range(5):
        fleet.ping(f"A-{index}", False, T0 + index, failure="http_503")
    assert fleet.pages == []
    assert len(connector_pages(fleet)) == 10  # Platform Admin and tenant, per connector
    assert all(m.state.record.outage_id is not None for m in fleet.connectors.values())
    assert not [e for e in fleet.log if e.type is EventType.NOTIFICATION_SUPPRESSED]


# -- the circuit breaker (docs/outages.md) ----------------------------------------------------

BREAKER_POLICY = {
    **ERP_POLICY,
    "defaults": {"max_retries": 3, "backoff": {"base_s": 1, "cap_s": 2}, "attempt_timeout_s": 5},
}
KEY = "outage:dependency:sap-prod"


def started(member: Driver) -> list[AuditEvent]:
    return member.of_type(EventType.RECOVERY_STARTED)


def test_while_the_outage_is_open_only_its_probe_restarts() -> None:
    fleet = Fleet.with_policy(BREAKER_POLICY)
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    roles = [(n.connector_id, n.role) for n in fleet.notices]
    assert roles == [("SAP-0", OutageRole.LINKED)] + [
        (f"SAP-{i}", OutageRole.HELD) for i in range(1, 5)
    ]
    for index in range(5):
        member = fleet.connectors[f"SAP-{index}"]
        member.now = T0 + 60_000
        member.run_for(60)
        record = member.state.record
        if index == 0:  # the probe: its usual backoff, retries and incident
            assert len(started(member)) == 3
            assert record.incident_open
        else:
            assert started(member) == []
            assert (record.restarts_held, record.next_attempt_at) == (True, None)
            assert not record.incident_open  # no retries were used up
        assert fold(Record(member.connector_id), member.events) == record


def test_a_recovery_releases_the_held_members_at_most_release_per_s() -> None:
    fleet = Fleet.with_policy({**BREAKER_POLICY, "outages": {"release_per_s": 20}})
    for index in range(6):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    recovered_at = T0 + 30_000
    fleet.ping("SAP-0", True, recovered_at)  # the probe: the dependency answers
    first = [n for n in fleet.notices if n.role is OutageRole.RELEASED]
    assert [(n.connector_id, n.at) for n in first] == [("SAP-1", recovered_at)]
    assert outage_deadline(fleet.outages[KEY], fleet.policy) == recovered_at + 50
    assert [(n.connector_id, n.at) for n in fleet.tick_outage(KEY, recovered_at + 120)] == [
        ("SAP-2", recovered_at + 50),
        ("SAP-3", recovered_at + 100),
    ]
    assert fleet.tick_outage(KEY, recovered_at + 149) == []
    assert [n.connector_id for n in fleet.tick_outage(KEY, recovered_at + 10_000)] == [
        "SAP-4",
        "SAP-5",
    ]
    assert outage_deadline(fleet.outages[KEY], fleet.policy) is None
    for index in range(1, 6):
        member = fleet.connectors[f"SAP-{index}"]
        (released,) = member.of_type(EventType.OUTAGE_RELEASED)
        member.now = released.occurred_at
        member.tick()
        (attempt,) = started(member)
        assert attempt.occurred_at == released.occurred_at == recovered_at + 50 * (index - 1)
        assert attempt.mode is RecoveryMode.AUTO
        assert fold(Record(member.connector_id), member.events) == member.state.record


def test_a_held_members_attempt_in_flight_fails_without_using_up_its_retries() -> None:
    fleet = Fleet.with_policy({**BREAKER_POLICY, "defaults": {"max_retries": 1}})
    fleet.ping("SAP-0", False, T0)  # the first to fail: the probe
    fleet.ping("SAP-1", False, T0 + 1)
    member = fleet.connectors["SAP-1"]
    member.now = T0 + 2_000
    member.tick()  # its first attempt, before any outage
    assert len(started(member)) == 1
    for index in (2, 3, 4):
        fleet.ping(f"SAP-{index}", False, T0 + 2_100 + index)
    assert member.state.record.restarts_held
    member.now = T0 + 60_000
    member.tick()
    (failed,) = member.of_type(EventType.RECOVERY_FAILED)
    assert failed.attributes.get("next_attempt_at") is None
    assert member.of_type(EventType.RETRIES_EXHAUSTED) == []
    assert not member.state.record.incident_open


def test_a_probe_that_leaves_hands_the_probe_to_the_next_member() -> None:
    fleet = Fleet.with_policy(BREAKER_POLICY)
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    fleet.admin("SAP-0", AdminAction.RETIRE, "SAP-0:1")
    (handed,) = [n for n in fleet.notices if n.role is OutageRole.RELEASED]
    assert handed.connector_id == "SAP-1"
    member = fleet.connectors["SAP-1"]
    assert not member.state.record.restarts_held
    member.now = handed.at
    member.tick()
    assert len(started(member)) == 1


def test_without_dependencies_or_outages_in_the_policy_no_restart_is_held() -> None:
    fleet = Fleet.with_policy({"defaults": {"max_retries": 2}})
    for index in range(5):
        fleet.ping(f"A-{index}", False, T0 + index, failure="http_503")
    assert {n.role for n in fleet.notices} == {OutageRole.LINKED}
    for member in fleet.connectors.values():
        assert not member.state.record.restarts_held
        member.now = T0 + 60_000
        member.run_for(60)
        assert len(started(member)) == 2


# -- an admin's commands of a whole outage ------------------------------------------------------

OUTAGE_ID = f"{KEY}:1"


def _breaker_outage(members: int = 5) -> Fleet:
    fleet = Fleet.with_policy(BREAKER_POLICY)
    for index in range(members):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    assert fleet.outages[KEY].record.outage_id == OUTAGE_ID
    return fleet


def rejection(events: list[AuditEvent]) -> str:
    (rejected,) = events
    assert rejected.type is EventType.COMMAND_REJECTED
    assert rejected.connector_id.startswith("outage:dependency:")
    return read(CommandRejected, rejected.attributes).rejection


def test_ack_of_an_outage_is_recorded_on_its_chain_once() -> None:
    fleet = _breaker_outage()
    (acked,) = fleet.outage_admin(AdminAction.ACKNOWLEDGE, OUTAGE_ID, T0 + 5_000, actor="bob")
    assert acked.type is EventType.OUTAGE_ACKNOWLEDGED
    assert (acked.connector_id, acked.incident_id, acked.actor) == (KEY, OUTAGE_ID, "bob")
    assert read(OutageAcknowledged, acked.attributes).command_id.startswith("cmd-")
    assert fleet.outages[KEY].record.acknowledged_by == "bob"
    again = fleet.outage_admin(AdminAction.ACKNOWLEDGE, OUTAGE_ID, T0 + 6_000, actor="carol")
    assert "already acknowledged by 'bob'" in rejection(again)


def test_recover_of_an_outage_starts_a_manual_attempt_of_every_member_still_failing() -> None:
    fleet = _breaker_outage(6)
    fleet.ping("SAP-5", True, T0 + 1_000)  # recovered: not recovered again
    for index in range(6):  # the released ones restart at their release: not in flight
        fleet.connectors[f"SAP-{index}"].now = T0 + 1_000
    (requested,) = fleet.outage_admin(AdminAction.RECOVER, OUTAGE_ID, T0 + 2_000, actor="bob")
    assert requested.type is EventType.OUTAGE_RECOVERY_REQUESTED
    view = read(OutageRecoveryRequested, requested.attributes)
    assert view.connectors == ("SAP-0", "SAP-1", "SAP-2", "SAP-3", "SAP-4")
    assert view.incidents == tuple(f"SAP-{i}:1" for i in range(5))
    for index in range(5):
        member = fleet.connectors[f"SAP-{index}"]
        manual = [e for e in started(member) if e.mode is RecoveryMode.MANUAL]
        (attempt,) = manual
        assert attempt.actor == "bob"
        assert attempt.attributes["command_id"] == f"{view.command_id}:SAP-{index}"
        assert member.recovery_requests()[-1].actor == "bob"
        assert fold(Record(member.connector_id), member.events) == member.state.record
    assert not [e for e in started(fleet.connectors["SAP-5"]) if e.mode is RecoveryMode.MANUAL]


def test_resolve_closes_the_outage_by_hand_and_releases_its_held_members() -> None:
    fleet = _breaker_outage()
    (resolved,) = fleet.outage_admin(AdminAction.RESOLVE, OUTAGE_ID, T0 + 9_000, actor="bob")
    assert resolved.type is EventType.OUTAGE_RESOLVED
    assert resolved.actor == "bob"
    view = read(OutageResolved, resolved.attributes)
    assert (view.resolution, view.still_failing, view.recovered) == ("manual", 5, 0)
    assert view.command_id is not None
    state = fleet.outages[KEY]
    assert state.record.outage_id is None
    assert state.memory == OutageMemory()
    # the members keep their own episodes; the held ones restart, nothing holds them now
    released = [n for n in fleet.notices if n.role is OutageRole.RELEASED]
    assert [n.connector_id for n in released] == ["SAP-1", "SAP-2", "SAP-3", "SAP-4"]
    for index in range(5):
        record = fleet.connectors[f"SAP-{index}"].state.record
        assert record.phase is Phase.FAILED
        assert not record.restarts_held
    # the closing pages go out, once per audience, as when the last member recovers
    closing = [p for p in fleet.pages if p.notification_kind is NotificationKind.OUTAGE_RESOLVED]
    assert [p.target for p in closing] == ["platform_admin", "tenant:acme"]
    # the members' later recoveries change nothing; a later failure starts a new outage
    for index in range(5):
        fleet.ping(f"SAP-{index}", True, T0 + 20_000)
    assert fleet.outage_events()[-1] == resolved


def test_invalid_outage_commands_are_rejected_with_a_reason() -> None:
    fleet = _breaker_outage()
    unknown = fleet.outage_admin(AdminAction.ACKNOWLEDGE, "outage:dependency:crm-eu:1", T0)
    assert "unknown outage 'outage:dependency:crm-eu:1'" in rejection(unknown)
    wrong = fleet.outage_admin(AdminAction.RECOVER, f"{KEY}:7", T0 + 1)
    assert f"outage '{KEY}:7' is not open" in rejection(wrong)
    fleet.outage_admin(AdminAction.RESOLVE, OUTAGE_ID, T0 + 2)
    for action in (AdminAction.ACKNOWLEDGE, AdminAction.RECOVER, AdminAction.RESOLVE):
        again = fleet.outage_admin(action, OUTAGE_ID, T0 + 3)
        assert f"outage '{OUTAGE_ID}' is not open (resolved)" in rejection(again)
    retire = fleet.outage_admin(AdminAction.RETIRE, KEY, T0 + 4)
    assert "not open" in rejection(retire) or "acts on a connector" in rejection(retire)


def test_an_actor_outside_the_policys_admins_is_rejected() -> None:
    fleet = Fleet.with_policy({**BREAKER_POLICY, "admins": ["alice"]})
    for index in range(5):
        fleet.ping(f"SAP-{index}", False, T0 + index)
    refused = fleet.outage_admin(AdminAction.RESOLVE, OUTAGE_ID, T0 + 10, actor="mallory")
    assert "'mallory' is not in the policy's admins" in rejection(refused)
    assert fleet.outages[KEY].record.outage_id == OUTAGE_ID


admin_steps = st.lists(
    st.tuples(
        st.sampled_from(["ping", "ack", "recover", "resolve"]),
        st.integers(0, 7),
        st.booleans(),
        st.integers(1, 4_000),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(admin_steps)
def test_outage_commands_keep_state_the_fold_of_events_and_chains_verify(
    script: list[tuple[str, int, bool, int]],
) -> None:
    fleet = Fleet.with_policy({**BREAKER_POLICY, "outages": {"min_connectors": 3}})
    at = T0
    for step, index, healthy, gap in script:
        at += gap
        if step == "ping":
            fleet.ping(f"SAP-{index}", healthy, at)
            continue
        action = {
            "ack": AdminAction.ACKNOWLEDGE,
            "recover": AdminAction.RECOVER,
            "resolve": AdminAction.RESOLVE,
        }[step]
        state = fleet.outages.get(KEY)
        target = state.record.outage_id if state and state.record.outage_id and healthy else KEY
        fleet.outage_admin(action, target, at)
    for key, state in fleet.outages.items():
        own = [e for e in fleet.log if e.connector_id == key]
        assert fold_outage(OutageRecord(key), own) == state.record
        kinds = [
            e.type for e in own if e.type in {EventType.OUTAGE_OPENED, EventType.OUTAGE_RESOLVED}
        ]
        assert kinds[::2] == [EventType.OUTAGE_OPENED] * len(kinds[::2])
        assert kinds[1::2] == [EventType.OUTAGE_RESOLVED] * len(kinds[1::2])
    for connector_id, member in fleet.connectors.items():
        assert fold(Record(connector_id), member.events) == member.state.record
    assert [f for f in verify_events(fleet.log) if f.kind in CHAIN_FINDINGS] == []
