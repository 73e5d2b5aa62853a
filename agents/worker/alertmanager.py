"""Incidents as alerts in a Prometheus Alertmanager (API v2; docs/alertmanager.md).

An open incident is an alert: labels `alertname` (`ConnectorIncident`, or
`ConnectorEscalation` once escalated past the Platform Admin), `connector`, `tenant`,
`incident_id`, `failure`, `severity`; annotations `summary`, `description`, `runbook_url`,
`dashboard`; `startsAt` = detected, `endsAt` once the incident is resolved or the connector
recovered. An open outage (docs/outages.md) is one `ConnectorOutage` alert (labels `outage`,
`group`, `tenant`, `severity`), posted by the resender. Two paths post them:

- the notifier (`post_for_request`, from `notifier.deliver`): an incident's notification
  posts its alert at once, with the notifier's bounded retries; a failure escalates the
  incident as a failed webhook does;
- `AlertResender`, from the worker's live views: every open incident of the connectors this
  worker owns, re-posted every `resend_s` (Alertmanager resolves an alert nobody re-posts)
  and at once after a start (nothing lost by a restart); in between, within `CHECK_S` of
  the audit event, only what changed is posted; an alert it posted whose incident
  is no longer open anywhere in the log is posted again with `endsAt`. An incident that
  moved to another worker is left to it, never resolved by mistake. A connector silenced
  here is not re-posted while the silence lasts.

Tenant isolation: a tenant's Alertmanager is only ever sent alerts of that tenant's
connectors; the Platform Admin's gets every tenant's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from agents.worker.http import HttpOutcome, post
from streams.grouping import outage_key
from streams.models import NotificationRequest
from streams.policy import AlertmanagerTarget, Policy
from streams.projections import Outage, tenant_key
from streams.state import Record
from streams.timefmt import iso_from_ms
from streams.views import FleetView, OpenEpisode

log = logging.getLogger("connector_recovery.alertmanager")

INCIDENT = "ConnectorIncident"
ESCALATION = "ConnectorEscalation"
OUTAGE = "ConnectorOutage"
OUTAGE_CONNECTORS_NAMED = 20  # an outage's description names its first connectors, not 300
CHECK_S = 1.0  # how soon a closed or new incident reaches Alertmanager from the views
HEADERS = {"Content-Type": "application/json"}
# The notifications that carry an incident's alert; others (a detection before the
# retries are spent, flapping) are not incidents.
_FIRING_KINDS = frozenset({"incident_opened", "incident_escalated"})
_RESOLVING_KINDS = frozenset({"recovered"})

LabelsKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AlertLinks:
    """What an alert links to and learns from the worker: the admin page of a connector,
    and the open episode behind an incident (for its detection time), if the views have
    it yet."""

    dashboard_url: Callable[[str], str]
    episode: Callable[[str], OpenEpisode | None]


def page_of(
    target: AlertmanagerTarget, connector_id: str, worker_page: Callable[[str], str]
) -> str:
    """The connector's timeline on the admin page: under the target's `dashboard_url` (the
    address people reach it at), else on this worker's own web port."""
    if target.dashboard_url is None:
        return worker_page(connector_id)
    return f"{target.dashboard_url.rstrip('/')}/timeline?{urlencode({'id': connector_id})}"


def alertname_for(level: int | None) -> str:
    """Levels 1.. are the policy's escalation steps; 0 (the Platform Admin) and below are
    the incident itself."""
    return ESCALATION if level is not None and level >= 1 else INCIDENT


def alert(
    episode: OpenEpisode,
    alertname: str,
    target: AlertmanagerTarget,
    dashboard_url: str,
    *,
    ends_at: int | None = None,
) -> dict[str, Any]:
    tenant = tenant_key(episode.tenant_id)
    labels = {
        "alertname": alertname,
        "connector": episode.connector_id,
        "tenant": tenant,
        "incident_id": episode.incident_id,
        "severity": target.severity,
    }
    if episode.failure:  # Alertmanager treats an empty label as an absent one
        labels["failure"] = episode.failure
    what = "escalated" if alertname == ESCALATION else "needs a human"
    level = episode.escalation_level
    annotations = {
        "summary": f"Connector {episode.connector_id} (tenant {tenant}) {what}",
        "description": (
            f"Connector {episode.connector_id} of tenant {tenant} failed"
            f" ({episode.failure or 'unknown failure'}) and its automatic recovery is spent:"
            f" incident {episode.incident_id}"
            + (f", escalation level {level}" if level else "")
            + ". Acknowledge, recover or resolve it on the admin page."
        ),
        "dashboard": dashboard_url,
    }
    if target.runbook_url:
        annotations["runbook_url"] = target.runbook_url
    if episode.acknowledged_by:  # still open: acknowledging here stops the escalation only
        annotations["acknowledged_by"] = episode.acknowledged_by
    body: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso_from_ms(episode.detected_at),
        "generatorURL": dashboard_url,
    }
    if ends_at is not None:
        body["endsAt"] = iso_from_ms(max(ends_at, episode.detected_at))
    return body


def outage_alert(outage: Outage, target: AlertmanagerTarget, dashboard_url: str) -> dict[str, Any]:
    """An open outage (docs/outages.md): one alert for the group, whatever its size."""
    tenant = tenant_key(outage.tenant_id)
    members = sorted(set(outage.connectors))
    named = ", ".join(members[:OUTAGE_CONNECTORS_NAMED])
    more = len(members) - OUTAGE_CONNECTORS_NAMED
    annotations = {
        "summary": f"Outage of {outage.group}: {len(members)} connectors failing (tenant {tenant})",
        "description": f"Connectors failing for one cause: {named}"
        + (f" and {more} more" if more > 0 else "")
        + ".",
        "dashboard": dashboard_url,
    }
    if target.runbook_url:
        annotations["runbook_url"] = target.runbook_url
    return {
        "labels": {
            "alertname": OUTAGE,
            "outage": outage.outage_id,
            "group": outage.group,
            "tenant": tenant,
            "severity": target.severity,
        },
        "annotations": annotations,
        "startsAt": iso_from_ms(outage.opened_at),
        "generatorURL": dashboard_url,
    }


def _subject(posted: dict[str, Any]) -> str:
    """The incident or outage an alert stands for."""
    labels = posted["labels"]
    return str(labels.get("incident_id") or labels.get("outage"))


def outages_for(audience: str, outages: Iterable[Outage]) -> list[Outage]:
    """The Platform Admin's Alertmanager gets every outage; a tenant's, the outages of its
    own connectors only (a dependency's outage spans tenants: the platform's)."""
    if audience == "platform_admin":
        return list(outages)
    if audience.startswith("tenant:"):
        tenant = audience.removeprefix("tenant:")
        return [outage for outage in outages if outage.tenant_id == tenant]
    return []


def labels_key(posted: dict[str, Any]) -> LabelsKey:
    """An alert's identity in Alertmanager: its labels."""
    return tuple(sorted(posted["labels"].items()))


def wanted(audience: str, episodes: Iterable[OpenEpisode]) -> list[tuple[str, OpenEpisode]]:
    """(alertname, episode) of the open incidents an audience's Alertmanager should hold:
    the Platform Admin every incident (and its escalation), a tenant its own connectors'
    incidents, escalation step n the incidents escalated to n or beyond."""
    chosen: list[tuple[str, OpenEpisode]] = []
    for episode in episodes:
        level = episode.escalation_level or 0
        if audience == "platform_admin":
            chosen.append((INCIDENT, episode))
            if level >= 1:
                chosen.append((ESCALATION, episode))
        elif audience.startswith("tenant:"):
            if episode.tenant_id == audience.removeprefix("tenant:"):
                chosen.append((INCIDENT, episode))
        elif audience.startswith("escalation:") and level >= int(
            audience.removeprefix("escalation:")
        ):
            chosen.append((ESCALATION, episode))
    return chosen


async def send(
    session: aiohttp.ClientSession,
    target: AlertmanagerTarget,
    alerts: list[dict[str, Any]],
    attempts: int = 3,
) -> HttpOutcome:
    body = json.dumps(alerts, sort_keys=True).encode()
    return await post(
        session,
        target.alerts_url,
        body,
        headers=HEADERS,
        timeout_s=target.timeout_s,
        attempts=attempts,
    )


async def post_for_request(
    session: aiohttp.ClientSession,
    target: AlertmanagerTarget,
    request: NotificationRequest,
    links: AlertLinks | None,
    attempts: int = 3,
) -> tuple[bool, str]:
    """A notification as an alert: (delivered, detail)."""
    kind = request.notification_kind
    if kind not in _FIRING_KINDS | _RESOLVING_KINDS:
        return True, f"not an incident ({kind}): no alert posted"
    known = links.episode(request.incident_id) if links is not None else None
    if kind in _RESOLVING_KINDS and known is not None and known.opened_at is None:
        # Recovered by its retries: no incident opened, so no alert to resolve (a storm's
        # thousands of self-healed connectors are not posted).
        return True, "recovered before an incident opened: no alert posted"
    episode = OpenEpisode(
        incident_id=request.incident_id,
        connector_id=request.connector_id,
        tenant_id=request.tenant_id,
        # The detection's failure: a recovered connector's request carries none, and the
        # labels must be those of the firing alert for Alertmanager to resolve it.
        failure=known.failure if known is not None else request.failure,
        detected_at=known.detected_at if known is not None else request.occurred_at,
        escalation_level=request.level,
    )
    dashboard = page_of(target, request.connector_id, links.dashboard_url) if links else ""
    if kind in _RESOLVING_KINDS:
        names = [INCIDENT, ESCALATION] if request.level == 0 else [INCIDENT]
        alerts = [
            alert(episode, name, target, dashboard, ends_at=request.occurred_at) for name in names
        ]
    else:
        alerts = [alert(episode, alertname_for(request.level), target, dashboard)]
    outcome = await send(session, target, alerts, attempts)
    detail = f"Alertmanager {outcome.detail}" if outcome.ok else outcome.detail
    return outcome.ok, detail


def _silence_end(record: Record | None, now: int) -> int | None:
    """When the silence of a connector silenced here (`connector-recovery silence`) ends;
    None if it is not silenced. A silenced connector is not notified: its open incident is
    not re-posted, so Alertmanager lets the alert time out."""
    if record is None or record.silenced_until is None or record.silenced_until <= now:
        return None
    return record.silenced_until


class AlertResender:
    """Keeps the policy's Alertmanagers holding exactly the open incidents of the
    connectors this worker owns (see the module's doc)."""

    def __init__(
        self,
        policy: Policy,
        *,
        view: Callable[[], FleetView],
        owned: Callable[[str], bool],
        session: Callable[[], aiohttp.ClientSession],
        dashboard_url: Callable[[str], str],
        counters: dict[str, int],
    ) -> None:
        self.policy = policy
        self.view = view
        self.owned = owned
        self.session = session
        self.dashboard_url = dashboard_url
        self.counters = counters
        counters.setdefault("alertmanager_posts", 0)
        counters.setdefault("alertmanager_post_failures", 0)
        self.targets = policy.alertmanagers()
        self.firing: dict[str, dict[LabelsKey, dict[str, Any]]] = {}  # posted, per audience
        self.resolving: dict[str, dict[LabelsKey, dict[str, Any]]] = {}
        self.last_posted: dict[str, float] = {}  # monotonic seconds, per audience
        self.failing: set[str] = set()
        # What the last pass saw: a pass with no new event, nothing due, no silence ending
        # and nothing failing has nothing to do (a storm's open incidents are not rebuilt
        # into alerts every second).
        self._events_seen = -1
        self._silence_ends: int | None = None
        # Alerts built in the last pass, by (audience, alertname, episode): an unchanged
        # episode's alert is not built again.
        self._built: dict[tuple[str, str, OpenEpisode], tuple[LabelsKey, dict[str, Any]]] = {}

    async def run(self, ready: asyncio.Event) -> None:
        if not self.targets:
            return
        await ready.wait()
        while True:
            try:
                await self.post_due(time.monotonic(), time.time_ns() // 1_000_000)
            except Exception:
                # Paging is one part of the worker: a fault here must not stop deciding.
                log.exception("re-posting the open incidents to Alertmanager failed")
            await asyncio.sleep(CHECK_S)

    async def post_due(self, monotonic_s: float, now: int) -> None:
        view = self.view()
        due = any(
            monotonic_s - self.last_posted.get(audience, -1e18) >= target.resend_s
            for audience, target in self.targets
        )
        silence_ended = self._silence_ends is not None and now >= self._silence_ends
        if view.events == self._events_seen and not (due or silence_ended or self.failing):
            return
        self._events_seen = view.events
        everyone = view.open_incidents()
        outages = view.open_outages()
        still_open = {episode.incident_id for episode in everyone}
        still_open.update(outage.outage_id for outage in outages)
        my_outages = [o for o in outages if self.owned(outage_key(o.group))]
        mine = []
        self._silence_ends = None
        for episode in everyone:
            if not self.owned(episode.connector_id):
                continue
            ends = _silence_end(view.records.get(episode.connector_id), now)
            if ends is None:
                mine.append(episode)
            elif self._silence_ends is None or ends < self._silence_ends:
                self._silence_ends = ends
        built: dict[tuple[str, str, OpenEpisode], tuple[LabelsKey, dict[str, Any]]] = {}
        for audience, target in self.targets:
            want = {}
            for name, episode in wanted(audience, mine):
                cache_key = (audience, name, episode)
                entry = self._built.get(cache_key)
                if entry is None:  # new, or changed (escalated, acknowledged)
                    page = page_of(target, episode.connector_id, self.dashboard_url)
                    fresh = alert(episode, name, target, page)
                    entry = (labels_key(fresh), fresh)
                built[cache_key] = entry
                want[entry[0]] = entry[1]
            for outage in outages_for(audience, my_outages):
                first = outage.connectors[0] if outage.connectors else ""  # its timeline
                posted = outage_alert(outage, target, page_of(target, first, self.dashboard_url))
                want[labels_key(posted)] = posted
            await self._post(audience, target, want, still_open, monotonic_s=monotonic_s, now=now)
        self._built = built

    async def _post(
        self,
        audience: str,
        target: AlertmanagerTarget,
        want: dict[LabelsKey, dict[str, Any]],
        still_open: set[str],
        *,
        monotonic_s: float,
        now: int,
    ) -> None:
        """Every `resend_s` (and while Alertmanager failed) the whole set; in between, what
        changed: new or changed alerts, and the resolved ones."""
        before = self.firing.get(audience, {})
        resolving = self.resolving.setdefault(audience, {})
        for key in before.keys() - want.keys():
            closed = before[key]
            if _subject(closed) in still_open:
                continue  # another worker's now: it keeps the alert firing
            resolving[key] = {**closed, "endsAt": iso_from_ms(now)}
        whole = (
            audience in self.failing
            or monotonic_s - self.last_posted.get(audience, -1e18) >= target.resend_s
        )
        if whole:
            alerts = [*want.values(), *resolving.values()]
        else:
            changed = [posted for key, posted in want.items() if before.get(key) is not posted]
            alerts = [*changed, *resolving.values()]
        if alerts:
            outcome = await send(self.session(), target, alerts)
            if not outcome.ok:
                self._failed(audience, target, outcome.detail)
                return
            self.counters["alertmanager_posts"] += 1
            if audience in self.failing:
                self.failing.discard(audience)
                log.warning("Alertmanager of %s answers again: %d alerts posted",
                            audience, len(alerts))  # fmt: skip
        self.firing[audience] = want
        resolving.clear()
        if whole:
            self.last_posted[audience] = monotonic_s

    def _failed(self, audience: str, target: AlertmanagerTarget, detail: str) -> None:
        self.counters["alertmanager_post_failures"] += 1
        if audience not in self.failing:  # once per outage, not once a second
            self.failing.add(audience)
            log.warning(
                "cannot post the open incidents of %s to Alertmanager %s: %s; retrying",
                audience,
                target.url,
                detail,
            )
