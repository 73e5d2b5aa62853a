"""Incidents as Alertmanager alerts without a broker: the policy's target, the notifier's
post (and its failure, which escalates), the resender's keep-alive, resolution, restart and
tenant isolation, against a recording HTTP stub (tests/kafka/test_alertmanager.py runs the
real Alertmanager)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from agents.worker.alertmanager import ESCALATION, INCIDENT, OUTAGE, AlertLinks, AlertResender
from agents.worker.notifier import deliver
from streams.models import NotificationRequest
from streams.policy import AlertmanagerTarget, PolicyError, parse_policy, policy_from_yaml
from streams.projections import Outage
from streams.state import Record
from streams.views import OpenEpisode
from tests.kafka.harness import free_port
from tests.kafka.httpstub import HttpStub

T0 = 1_764_000_000_000


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    running = HttpStub().start()
    yield running
    running.stop()


def policy_for(url: str, **extra: Any) -> Any:
    return parse_policy(
        {
            "platform_admin": {
                "type": "alertmanager",
                "url": f"{url}/admin",
                "severity": "page",
                "runbook_url": "https://runbooks.example/connector",
                **extra,
            },
            "tenants": {
                "acme": {"type": "alertmanager", "url": f"{url}/acme", "resend_s": 30},
                "globex": {"webhook": f"{url}/globex-hook"},
            },
            "escalation": [
                {"after_s": 60, "target": {"type": "alertmanager", "url": f"{url}/oncall"}}
            ],
        }
    )


def episode(
    connector: str, tenant: str | None, level: int = 0, failure: str | None = "timeout"
) -> OpenEpisode:
    return OpenEpisode(
        incident_id=f"{connector}:1",
        connector_id=connector,
        tenant_id=tenant,
        failure=failure,
        detected_at=T0,
        opened_at=T0 + 5000,
        escalation_level=level,
    )


def request(kind: str, target: str, level: int, **changes: Any) -> NotificationRequest:
    fields: dict[str, Any] = {
        "dedup_key": f"C1:1:{kind}:{target}",
        "notification_kind": kind,
        "target": target,
        "level": level,
        "connector_id": "C1",
        "tenant_id": "acme",
        "incident_id": "C1:1",
        "failure": "timeout",
        "cause_event_id": "C1:4",
        "occurred_at": T0 + 5000,
        "summary": "Connector C1 needs a human: incident opened",
    }
    fields.update(changes)
    return NotificationRequest(**fields)


def links(known: dict[str, OpenEpisode] | None = None) -> AlertLinks:
    return AlertLinks(lambda c: f"http://worker/dashboard/timeline?id={c}", (known or {}).get)


def posted(stub: HttpStub, path: str) -> list[list[dict[str, Any]]]:
    return [r.json() for r in stub.to(path)]


# -- the policy ---------------------------------------------------------------------------------


def test_an_alertmanager_target_sits_beside_webhooks_for_every_audience() -> None:
    policy = policy_for("http://am:9093")
    assert isinstance(policy.platform_admin, AlertmanagerTarget)
    assert policy.platform_admin.alerts_url == "http://am:9093/admin/api/v2/alerts"
    assert policy.platform_admin.resend_s == 60
    assert [who for who, _ in policy.alertmanagers()] == [
        "platform_admin",
        "tenant:acme",
        "escalation:1",
    ]
    assert policy_from_yaml("platform_admin: {webhook: 'http://hook'}").alertmanagers() == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"platform_admin": {"type": "pagerduty"}}, "platform_admin: type: use webhook"),
        ({"tenants": {"a": {"type": "alertmanager"}}}, "tenants.a.alertmanager.url: Field req"),
        (
            {"platform_admin": {"type": "alertmanager", "url": "http://a", "resend": 5}},
            "(did you mean resend_s?)",
        ),
        (
            {"platform_admin": {"type": "alertmanager", "url": "http://a", "resend_s": 0}},
            "platform_admin.alertmanager.resend_s",
        ),
    ],
)
def test_a_wrong_alertmanager_target_is_named_at_start_up(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(document)


# -- the notifier ---------------------------------------------------------------------------------


async def test_an_incident_notification_is_an_alert_with_the_labels_and_the_detection_time(
    stub: HttpStub,
) -> None:
    policy = policy_for(stub.url)
    known = {"C1:1": episode("C1", "acme")}
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("incident_opened", "platform_admin", 0), lambda: T0,
            alert_links=links(known),
        )  # fmt: skip
    assert result.delivered, result.detail
    [[alert]] = posted(stub, "/admin/api/v2/alerts")
    assert alert["labels"] == {
        "alertname": INCIDENT,
        "connector": "C1",
        "tenant": "acme",
        "incident_id": "C1:1",
        "failure": "timeout",
        "severity": "page",
    }
    assert alert["startsAt"] == "2025-11-24T16:00:00.000Z"  # detected, not opened
    assert "endsAt" not in alert
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example/connector"
    assert alert["annotations"]["dashboard"] == "http://worker/dashboard/timeline?id=C1"
    assert "C1" in alert["annotations"]["summary"]
    assert "acme" in alert["annotations"]["summary"]


async def test_an_escalation_past_the_admin_is_a_connector_escalation_alert(
    stub: HttpStub,
) -> None:
    policy = policy_for(stub.url)
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("incident_escalated", "escalation:1", 1), lambda: T0,
            alert_links=links(),
        )  # fmt: skip
    assert result.delivered
    [[alert]] = posted(stub, "/oncall/api/v2/alerts")
    assert alert["labels"]["alertname"] == ESCALATION


async def test_recovery_posts_the_firing_alerts_again_with_ends_at(stub: HttpStub) -> None:
    policy = policy_for(stub.url)
    known = {"C1:1": episode("C1", "acme")}
    recovered = request("recovered", "platform_admin", 0, failure=None, occurred_at=T0 + 9000)
    async with aiohttp.ClientSession() as session:
        for kind, req in (
            ("opened", request("incident_opened", "platform_admin", 0)),
            ("recovered", recovered),
        ):
            result = await deliver(session, policy, req, lambda: T0, alert_links=links(known))
            assert result.delivered, kind
    firing, resolving = posted(stub, "/admin/api/v2/alerts")
    # Same labels (the detection's failure, though the recovered request carries none), so
    # Alertmanager resolves the alert it holds.
    assert resolving[0]["labels"] == firing[0]["labels"]
    assert resolving[0]["endsAt"] == "2025-11-24T16:00:09.000Z"
    assert {a["labels"]["alertname"] for a in resolving} == {INCIDENT, ESCALATION}


async def test_a_failed_post_is_an_undelivered_notification_after_the_bounded_retries() -> None:
    policy = policy_for(f"http://127.0.0.1:{free_port()}")  # nothing listens: refused
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("incident_opened", "tenant:acme", -1), lambda: T0,
            attempts=2, alert_links=links(),
        )  # fmt: skip
    assert not result.delivered  # the decider escalates it as it does a failed webhook
    assert "ClientConnectorError" in (result.detail or "")


async def test_a_detection_before_the_retries_are_spent_is_no_alert(stub: HttpStub) -> None:
    policy = policy_for(stub.url)
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("failure_detected", "platform_admin", 0), lambda: T0,
            alert_links=links(),
        )  # fmt: skip
    assert result.delivered
    assert stub.received == []


# -- the resender ---------------------------------------------------------------------------------


class View:
    def __init__(self, episodes: list[OpenEpisode]) -> None:
        self.episodes = episodes
        self.records: dict[str, Record] = {}
        self.outages: list[Outage] = []

    def open_incidents(self) -> list[OpenEpisode]:
        return list(self.episodes)

    def open_outages(self) -> list[Outage]:
        return list(self.outages)

    @property
    def events(self) -> int:
        """Changes whenever what the resender reads changes, as the view's event count."""
        outages = tuple((o.outage_id, tuple(o.connectors)) for o in self.outages)
        return hash((tuple(self.episodes), outages, tuple(self.records.items())))


class Resending:
    def __init__(self, policy: Any, view: View, owned: set[str]) -> None:
        self.session = aiohttp.ClientSession()
        self.counters: dict[str, int] = {}
        self.resender = AlertResender(
            policy,
            view=lambda: view,  # type: ignore[arg-type, return-value]  # open_incidents() is all it reads
            owned=lambda connector: connector in owned,
            session=lambda: self.session,
            dashboard_url=lambda c: f"http://worker/dashboard/timeline?id={c}",
            counters=self.counters,
        )

    async def post_due(self, at_s: float) -> None:
        await self.resender.post_due(at_s, T0 + round(at_s * 1000))


def alertnames(batch: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
    return {(a["labels"]["alertname"], a["labels"]["connector"], a.get("endsAt")) for a in batch}


async def test_open_incidents_are_posted_at_start_and_every_resend_s_to_their_audiences(
    stub: HttpStub,
) -> None:
    view = View([episode("C1", "acme"), episode("G1", "globex", level=1), episode("P1", None)])
    run = Resending(policy_for(stub.url), view, owned={"C1", "G1", "P1"})
    try:
        await run.post_due(0.0)
        [admin] = posted(stub, "/admin/")
        assert alertnames(admin) == {
            (INCIDENT, "C1", None), (INCIDENT, "G1", None), (ESCALATION, "G1", None),
            (INCIDENT, "P1", None),
        }  # fmt: skip
        [acme] = posted(stub, "/acme/")
        assert alertnames(acme) == {(INCIDENT, "C1", None)}  # never another tenant's
        [oncall] = posted(stub, "/oncall/")
        assert alertnames(oncall) == {(ESCALATION, "G1", None)}
        await run.post_due(29.0)
        assert len(stub.received) == 3  # nothing changed, nothing due
        await run.post_due(30.0)  # acme's resend_s
        assert (len(posted(stub, "/acme/")), len(posted(stub, "/admin/"))) == (2, 1)
        await run.post_due(60.0)
        assert (len(posted(stub, "/admin/")), len(posted(stub, "/oncall/"))) == (2, 2)
    finally:
        await run.session.close()


async def test_a_closed_incident_is_posted_with_ends_at_and_one_that_moved_is_not(
    stub: HttpStub,
) -> None:
    view = View([episode("C1", "acme"), episode("C2", "acme")])
    owned = {"C1", "C2"}
    run = Resending(policy_for(stub.url), view, owned)
    try:
        await run.post_due(0.0)
        view.episodes = [episode("C2", "acme")]  # C1 resolved or recovered
        await run.post_due(1.0)
        last = posted(stub, "/acme/")[-1]  # what changed, not the whole set again
        assert alertnames(last) == {(INCIDENT, "C1", "2025-11-24T16:00:01.000Z")}
        owned.discard("C2")  # a rebalance: C2 is another worker's now, its incident open
        before = len(stub.received)
        await run.post_due(2.0)
        await run.post_due(3.0)
        assert len(stub.received) == before  # nothing resolved, nothing to keep alive
        assert not any(
            a["labels"]["connector"] == "C2" and a.get("endsAt")
            for batch in posted(stub, "/acme/")
            for a in batch
        )
    finally:
        await run.session.close()


async def test_an_unreachable_alertmanager_is_retried_until_it_holds_the_open_alerts(
    stub: HttpStub,
) -> None:
    stub.statuses["/admin/"] = 503
    view = View([episode("C1", "acme")])
    run = Resending(policy_for(stub.url), view, owned={"C1"})
    try:
        await run.post_due(0.0)
        assert run.counters["alertmanager_post_failures"] == 1
        failed = len(posted(stub, "/admin/"))
        del stub.statuses["/admin/"]
        await run.post_due(1.0)  # not resend_s later: as soon as it answers again
        assert len(posted(stub, "/admin/")) == failed + 1
        assert alertnames(posted(stub, "/admin/")[-1]) == {(INCIDENT, "C1", None)}
    finally:
        await run.session.close()


async def test_a_restarted_worker_posts_the_open_incidents_and_resolves_none(
    stub: HttpStub,
) -> None:
    view = View([episode("C1", "acme")])
    first = Resending(policy_for(stub.url), view, owned={"C1"})
    await first.post_due(0.0)
    await first.session.close()
    restarted = Resending(policy_for(stub.url), view, owned={"C1"})
    try:
        await restarted.post_due(0.5)
        batches = posted(stub, "/admin/")
        assert len(batches) == 2
        assert alertnames(batches[-1]) == {(INCIDENT, "C1", None)}
    finally:
        await restarted.session.close()


async def test_a_connector_silenced_here_is_not_re_posted_until_its_silence_ends(
    stub: HttpStub,
) -> None:
    view = View([episode("C1", "acme"), episode("C2", "acme")])
    view.records["C1"] = Record(connector_id="C1", silenced_until=T0 + 10_000)
    run = Resending(policy_for(stub.url), view, owned={"C1", "C2"})
    try:
        await run.post_due(0.0)
        assert alertnames(posted(stub, "/acme/")[-1]) == {(INCIDENT, "C2", None)}
        await run.post_due(30.0)  # the silence is over
        assert alertnames(posted(stub, "/acme/")[-1]) == {
            (INCIDENT, "C1", None),
            (INCIDENT, "C2", None),
        }
    finally:
        await run.session.close()


async def test_an_open_outage_is_one_alert_and_a_tenant_gets_only_its_own(
    stub: HttpStub,
) -> None:
    members = [f"SAP-{i:03d}" for i in range(30)]
    sap = Outage(
        "outage:dependency:sap-prod:1", "dependency:sap-prod", None, T0,
        members, [f"{m}:1" for m in members],
    )  # fmt: skip
    acme = Outage(
        "outage:tenant:acme/failure:timeout:1", "tenant:acme/failure:timeout", "acme", T0,
        ["A1", "A2"], ["A1:1", "A2:1"],
    )  # fmt: skip
    view = View([])
    view.outages = [sap, acme]
    owned = {"outage:dependency:sap-prod", "outage:tenant:acme/failure:timeout"}
    run = Resending(policy_for(stub.url), view, owned)
    try:
        await run.post_due(0.0)
        [admin] = posted(stub, "/admin/")
        assert {(a["labels"]["alertname"], a["labels"]["group"]) for a in admin} == {
            (OUTAGE, "dependency:sap-prod"),
            (OUTAGE, "tenant:acme/failure:timeout"),
        }
        described = next(a for a in admin if a["labels"]["group"] == "dependency:sap-prod")
        assert "30 connectors" in described["annotations"]["summary"]
        assert "and 10 more" in described["annotations"]["description"]
        [tenant] = posted(stub, "/acme/")  # a dependency's outage spans tenants: not acme's
        assert [a["labels"]["outage"] for a in tenant] == [acme.outage_id]
        view.outages = [acme]  # the SAP outage resolved
        await run.post_due(1.0)
        resolved = [a for a in posted(stub, "/admin/")[-1] if a.get("endsAt")]
        assert [a["labels"]["outage"] for a in resolved] == [sap.outage_id]
    finally:
        await run.session.close()


async def test_between_resends_only_what_changed_is_posted(stub: HttpStub) -> None:
    view = View([episode("C1", "acme"), episode("C2", "acme")])
    run = Resending(policy_for(stub.url), view, owned={"C1", "C2", "C3"})
    try:
        await run.post_due(0.0)
        acknowledged = episode("C1", "acme")._replace(acknowledged_by="alice")
        view.episodes = [acknowledged, episode("C2", "acme"), episode("C3", "acme")]
        await run.post_due(1.0)
        [changed] = [b for b in posted(stub, "/acme/")[1:]]
        assert sorted(a["labels"]["connector"] for a in changed) == ["C1", "C3"]
        c1 = next(a for a in changed if a["labels"]["connector"] == "C1")
        assert c1["annotations"]["acknowledged_by"] == "alice"
        await run.post_due(30.0)  # resend_s: the whole set again
        assert len(posted(stub, "/acme/")[-1]) == 3
    finally:
        await run.session.close()


async def test_alerts_link_the_admin_page_where_people_reach_it(stub: HttpStub) -> None:
    policy = policy_for(stub.url, dashboard_url="https://recovery.example/dashboard/")
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("incident_opened", "platform_admin", 0), lambda: T0,
            alert_links=links(),
        )  # fmt: skip
    assert result.delivered
    [[alert]] = posted(stub, "/admin/")
    assert alert["annotations"]["dashboard"] == "https://recovery.example/dashboard/timeline?id=C1"
    assert alert["generatorURL"] == alert["annotations"]["dashboard"]


async def test_a_recovery_before_any_incident_posts_nothing(stub: HttpStub) -> None:
    policy = policy_for(stub.url)
    healed = {"C1:1": episode("C1", "acme")._replace(opened_at=None)}
    async with aiohttp.ClientSession() as session:
        result = await deliver(
            session, policy, request("recovered", "platform_admin", 0), lambda: T0,
            alert_links=links(healed),
        )  # fmt: skip
    assert result.delivered
    assert stub.received == []
