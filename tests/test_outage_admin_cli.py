"""`connector-recovery ack|recover|resolve <outage id>`: the command the CLI sends for an
outage, and its answer as the worker's outage decider gives it (issue 22)."""

from __future__ import annotations

from typing import Any

import pytest

from agents import admin, cli
from agents.testing.driver import T0
from streams.models import AdminAction, AdminCommand, AuditEvent
from streams.outages import OutageState, decide_outage_command
from tests.core.test_outages import BREAKER_POLICY, KEY, Fleet

OUTAGE_ID = f"{KEY}:1"


@pytest.mark.parametrize(
    ("target", "key", "incident"),
    [
        (OUTAGE_ID, KEY, OUTAGE_ID),
        (KEY, KEY, None),  # the group's open outage, whichever it is
        (
            "outage:tenant:acme/failure:timeout:12",
            "outage:tenant:acme/failure:timeout",
            "outage:tenant:acme/failure:timeout:12",
        ),
    ],
)
def test_an_outage_target_is_keyed_by_the_outage(
    target: str, key: str, incident: str | None
) -> None:
    for action in (AdminAction.ACKNOWLEDGE, AdminAction.RECOVER, AdminAction.RESOLVE):
        command = admin.build_command(action, target, "bob")
        assert (command.connector_id, command.incident_id) == (key, incident)


class OutageWorker:
    """Answers the CLI's commands as the worker would: the outage's decider."""

    def __init__(self) -> None:
        fleet = Fleet.with_policy(BREAKER_POLICY)
        for index in range(5):
            fleet.ping(f"SAP-{index}", False, T0 + index)
        self.state = fleet.outages[KEY]
        self.policy = fleet.policy
        self.sent: list[AdminCommand] = []

    def run(self, _settings: Any, command: AdminCommand, _timeout: float) -> list[AuditEvent]:
        self.sent.append(command)
        state = self.state if command.connector_id == KEY else OutageState.new(command.connector_id)
        decision = decide_outage_command(state, command, self.policy)
        if command.connector_id == KEY:
            self.state = decision.state
        return list(decision.events)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> OutageWorker:
    answering = OutageWorker()
    monkeypatch.setattr(admin, "run", answering.run)
    return answering


def test_ack_recover_resolve_of_an_outage_are_accepted(
    worker: OutageWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb, event_type in (
        ("ack", "outage.acknowledged"),
        ("recover", "outage.recovery.requested"),
        ("resolve", "outage.resolved"),
    ):
        assert cli.main([verb, OUTAGE_ID, "--actor", "bob"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert out.startswith(f"accepted: {event_type} {KEY}:")
        assert f"incident={OUTAGE_ID}" in out
    assert [(c.connector_id, c.incident_id, c.actor) for c in worker.sent] == [
        (KEY, OUTAGE_ID, "bob")
    ] * 3


@pytest.mark.usefixtures("worker")
def test_a_resolved_or_unknown_outage_is_rejected_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["resolve", OUTAGE_ID, "--actor", "bob"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["ack", OUTAGE_ID, "--actor", "bob"]) == cli.EXIT_FINDINGS
    assert capsys.readouterr().out == f"rejected: outage {OUTAGE_ID!r} is not open (resolved)\n"
    assert cli.main(["recover", "outage:dependency:crm-eu:1", "--actor", "bob"]) == 1
    assert "unknown outage 'outage:dependency:crm-eu:1'" in capsys.readouterr().out
