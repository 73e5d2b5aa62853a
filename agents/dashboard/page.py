"""The admin page as server-rendered HTML: one renderer for the first load and for every
live refresh (the script swaps `#live` for `GET fragment`), charts drawn by the vendored
uPlot (`static/vendor/`) from data the server renders, no build step and nothing fetched
from elsewhere."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

import yaml

from agents.dashboard.auth import User
from agents.dashboard.board import STATES
from streams.timefmt import ms_from_iso

SLO_ALERT = "ConnectorMTTRAboveSLO"
ACTIONS_ON_INCIDENT = (("ACKNOWLEDGE", "acknowledge"), ("RESOLVE", "resolve"))
ACTIONS_ON_CONNECTOR = (("RECOVER", "recover"), ("SILENCE", "silence"))
ACTIONS_ON_OUTAGE = (
    ("ACKNOWLEDGE", "Acknowledge"),
    ("RECOVER", "Recover all"),
    ("RESOLVE", "Resolve"),
)


def slo_from_alerts(path: Path) -> float | None:
    """The MTTR SLO in seconds: the threshold of the `ConnectorMTTRAboveSLO` rule."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for group in (document or {}).get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") == SLO_ALERT:
                found = re.search(r">\s*([0-9.]+)\s*$", str(rule.get("expr", "")))
                return float(found.group(1)) if found else None
    return None


def _text(value: Any) -> str:
    return "" if value is None else escape(str(value))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours < 48 else f"{hours // 24}d {hours % 24}h"


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    return f'<time datetime="{escape(iso)}">{escape(iso[:19].replace("T", " "))}Z</time>'


def _buttons(actions: tuple[tuple[str, str], ...], target: str) -> str:
    return "".join(
        f'<button type="button" class="act" data-action="{action}" '
        f'data-target="{escape(target)}">{label}</button>'
        for action, label in actions
    )


def render_live(snapshot: dict[str, Any], slo_s: float | None, *, may_act: bool = True) -> str:
    """The live part of the page; without `may_act` (a read-only user) no action buttons
    (the server refuses their actions anyway)."""
    return "".join(
        (
            _status_line(snapshot),
            _fleet(snapshot["fleet"]),
            _outages(snapshot.get("outages", []), may_act),
            _incidents(snapshot["incidents"], may_act),
            _connectors(snapshot["connectors"]),
            _trends(snapshot["trends"], slo_s),
        )
    )


def _status_line(snapshot: dict[str, Any]) -> str:
    if snapshot.get("problem"):
        return f'<p class="fold problem" role="alert">{escape(snapshot["problem"])}</p>'
    if snapshot["caught_up"]:
        total = snapshot["connectors_total"]
        unlisted = total - len(snapshot["connectors"])
        fold = (
            f"live: {snapshot['folded']} audit events folded; "
            f"{total} connectors have a history"
            " (one that never failed has none yet)"
            + (f"; {unlisted} not listed (open one by its id)" if unlisted else "")
            + (
                f"; {snapshot['undecodable']} records not ours to read (run verify)"
                if snapshot.get("undecodable")
                else ""
            )
        )
    else:
        fold = (
            f"catching up: {snapshot['folded']} of {snapshot['to_fold']} audit events folded"
            " — figures are incomplete"
        )
    return (
        f'<p class="fold" data-caught-up="{str(snapshot["caught_up"]).lower()}">'
        f"{escape(fold)} · as of {_when(snapshot['generated_at'])}</p>"
    )


def _fleet(fleet: dict[str, int | None]) -> str:
    tiles = [(state, fleet[state]) for state in STATES] + [
        ("open incidents", fleet["open_incidents"]),
        ("unacknowledged", fleet["unacknowledged"]),
    ]
    if fleet["dead_letters"] is not None or fleet["inputs_lag"] is not None:
        tiles += [("dead letters", fleet["dead_letters"]), ("inputs lag", fleet["inputs_lag"])]
    cells = "".join(
        f'<div class="tile tile-{escape(name.replace(" ", "-"))}" data-figure="{escape(name)}">'
        f'<span class="n">{"?" if value is None else value}</span>'
        f'<span class="k">{escape(name)}</span></div>'
        for name, value in tiles
    )
    return f'<section class="fleet" aria-label="fleet">{cells}</section>'


def _outages(outages: list[dict[str, Any]], may_act: bool) -> str:
    """Open outages (docs/outages.md), each opening to its connectors; none: no section.
    A user who may act gets the outage's actions beside it, on an outage they may act on
    (a dependency's outage spanning tenants: platform users only)."""
    if not outages:
        return ""
    items = []
    for outage in outages:
        members = "".join(
            f'<li class="outage-member state-{escape(m["state"])}" tabindex="0" '
            f'data-connector="{escape(m["connector_id"])}">{_text(m["connector_id"])} '
            f'<span class="badge">{_text(m["state"])}</span></li>'
            for m in outage["connectors"]
        )
        more = outage["connectors_total"] - len(outage["connectors"])
        if more:
            members += f'<li class="none">{more} more (open one by its id)</li>'
        tenant = outage["tenant"] or "platform (a shared dependency)"
        actions = ""
        if may_act and outage.get("actionable", False):
            actions = (
                '<div class="actions outage-actions">'
                + _buttons(ACTIONS_ON_OUTAGE, outage["outage_id"])
                + "</div>"
            )
        items.append(
            f'<details class="outage" data-outage="{escape(outage["outage_id"])}"><summary>'
            f"<strong>{_text(outage['group'])}</strong> · {escape(tenant)} · "
            f"{outage['failing']} of {outage['connectors_total']} connectors failing · "
            f"opened {_when(outage['opened_at'])} ({duration(outage['age_s'])} ago) · "
            f"{_text(outage['outage_id'])}</summary>{actions}<ul>{members}</ul></details>"
        )
    return (
        '<section class="outages"><h2>Outages</h2><p class="note">connectors failing for one'
        " cause, grouped (docs/outages.md); open one to see its connectors</p>"
        + "".join(items)
        + "</section>"
    )


def _incidents(incidents: list[dict[str, Any]], may_act: bool) -> str:
    rows = []
    for incident in incidents:
        level = incident["escalation_level"]
        step = "-" if level is None else ("Platform Admin" if level == 0 else f"step {level}")
        actions = ""
        if incident["open"] and may_act:
            on_incident = tuple(
                a
                for a in ACTIONS_ON_INCIDENT
                if not (a[0] == "ACKNOWLEDGE" and incident["acknowledged_by"])
            )
            actions = _buttons(on_incident, incident["incident_id"]) + _buttons(
                ACTIONS_ON_CONNECTOR, incident["connector_id"]
            )
        rows.append(
            f'<tr class="{"open" if incident["open"] else "closed"}" '
            f'data-connector="{escape(incident["connector_id"])}">'
            f"<td>{_text(incident['incident_id'])}</td>"
            f"<td>{_text(incident['tenant'])}</td>"
            f"<td>{_text(incident['failure'])}</td>"
            f"<td>{'open' if incident['open'] else 'resolved'}</td>"
            f"<td>{_when(incident['opened_at'])}</td>"
            f"<td>{duration(incident['age_s'])}</td>"
            f"<td>{escape(step)}</td>"
            f"<td>{_text(incident['acknowledged_by']) or '-'}</td>"
            + (f'<td class="actions">{actions}</td>' if may_act else "")
            + "</tr>"
        )
    body = "".join(rows) or '<tr><td colspan="9" class="none">no incidents</td></tr>'
    header = "" if may_act else '<p class="note">read-only: you may look, not act</p>'
    return (
        f'<section class="incidents"><h2>Incidents</h2>{header}<div class="scroll">'
        '<table id="incidents"><thead><tr>'
        "<th>incident</th><th>tenant</th><th>failure</th><th>status</th><th>opened</th>"
        "<th>age</th><th>escalation</th><th>acknowledged by</th>"
        + ("<th>actions</th>" if may_act else "")
        + f"</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _connectors(connectors: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="connector state-{escape(c["state"])}" tabindex="0" '
        f'data-connector="{escape(c["connector_id"])}" data-tenant="{escape(c["tenant"])}" '
        f'data-state="{escape(c["state"])}">'
        f"<td>{_text(c['connector_id'])}</td><td>{_text(c['tenant'])}</td>"
        f'<td><span class="badge">{_text(c["state"])}</span></td>'
        f"<td>{_when(c['since'])}</td><td>{_text(c['failure'])}</td>"
        f"<td>{c['attempts']}</td><td>{_text(c['episode'])}</td></tr>"
        for c in connectors
    )
    body = rows or '<tr><td colspan="7" class="none">no connectors yet</td></tr>'
    return (
        '<section class="connectors"><h2>Connectors</h2><table id="connectors"><thead><tr>'
        "<th>connector</th><th>tenant</th><th>state</th><th>since</th><th>failure</th>"
        f"<th>attempts</th><th>episode</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


def _trends(trends: dict[str, Any], slo_s: float | None) -> str:
    charts = "".join(
        chart_figure(tenant, points, trends["window_s"], slo_s)
        for tenant, points in trends["tenants"].items()
    )
    slo = f"SLO: p90 MTTR ≤ {duration(slo_s)}" if slo_s else "SLO: unknown (no alert rules)"
    window = f"windows of {duration(trends['window_s'])}" if trends["window_s"] else "no failures"
    return (
        f'<section class="trends"><h2>Trends</h2><p class="note">{escape(window)} · '
        f"{escape(slo)} (from the {SLO_ALERT} alert rule)</p>"
        f'<div class="charts">{charts}</div></section>'
    )


SLO_IN_VIEW_FACTOR = 4


def chart_spec(
    tenant: str, points: list[dict[str, Any]], window_s: int | None, slo_s: float | None
) -> dict[str, Any]:
    """What `static/charts.js` draws for one tenant's trend (`kind` trend): per window
    (starts in epoch seconds), the failures and the MTTR mean, p50 and p90 in seconds."""
    values = [
        p[key]
        for p in points
        for key in ("mttr_mean_s", "mttr_p50_s", "mttr_p90_s")
        if p[key] is not None
    ]
    # An SLO far above every value would squash the lines flat at the bottom: then the scale
    # follows the values and the caption says the SLO is above the chart.
    highest = max([*values, 1.0])
    return {
        "kind": "trend",
        "tenant": tenant,
        "window_s": window_s or 1,
        "slo_s": slo_s,
        "slo_in_view": slo_s is not None and slo_s <= SLO_IN_VIEW_FACTOR * highest,
        "starts": [ms_from_iso(p["start"]) // 1000 for p in points],
        "failures": [p["failures"] for p in points],
        "mean": [p["mttr_mean_s"] for p in points],
        "p50": [p["mttr_p50_s"] for p in points],
        "p90": [p["mttr_p90_s"] for p in points],
    }


def chart_figure(
    tenant: str, points: list[dict[str, Any]], window_s: int | None, slo_s: float | None
) -> str:
    """One tenant's trend chart: a caption, and an element `charts.js` draws into (uPlot:
    axes with ticks and units, time ticks in UTC, a tooltip, the SLO line, and the legend
    below the plot, where it cannot overlap it)."""
    spec = chart_spec(tenant, points, window_s, slo_s)
    above = (
        f' · <span class="slo-above">SLO {escape(duration(slo_s))} is above the chart</span>'
        if slo_s and not spec["slo_in_view"]
        else ""
    )
    return (
        f'<figure class="chart" data-tenant="{escape(tenant)}" '
        f'data-chart="{escape(json.dumps(spec, separators=(",", ":")))}">'
        f"<figcaption><b>{escape(tenant)}</b>: MTTR and failures per window{above}"
        '</figcaption><div class="plot"></div></figure>'
    )


def _attributes(attributes: dict[str, str]) -> str:
    return "".join(f"<div><b>{_text(k)}</b> {_text(v)}</div>" for k, v in attributes.items())


def _breakable(dotted: str) -> str:
    """`connector.recovery.completed` with a line break allowed after each dot."""
    return "<wbr>".join(escape(part) + "." for part in dotted.split("."))[:-1]


def render_timeline(timeline: dict[str, Any], *, may_act: bool = True) -> str:
    chain = timeline["chain"]
    verdict = (
        f'<p class="chain ok">hash chain intact over {chain["events_checked"]} events</p>'
        if chain["verdict"] == "intact"
        else f'<p class="chain broken">hash chain broken: {_text(chain["problem"])}</p>'
    )
    rows = "".join(
        f"<tr><td>{event['sequence']}</td><td>{_when(event['occurred_at'])}</td>"
        f"<td>{_breakable(event['type'])}</td><td>{_text(event['incident_id'])}</td>"
        f"<td>{_text(event['attempt'])}</td><td>{_text(event['mode'])}</td>"
        f"<td>{_text(event['actor'])}</td><td>{_text(event['failure'])}</td>"
        f'<td class="attrs">'
        + _attributes(event["attributes"])
        + f'</td><td class="hash" title="{_text(event["hash"])}">{_text(event["hash"][:8])}…</td>'
        f'<td class="position">{_text(event["position"])}</td></tr>'
        for event in timeline["events"]
    )
    earlier = timeline["earlier_events_not_shown"]
    more = f'<p class="note">{earlier} earlier events not shown</p>' if earlier else ""
    return (
        f'<div class="timeline" data-connector="{_text(timeline["connector_id"])}">'
        f"<h2>Timeline of {_text(timeline['connector_id'])} "
        f'<span class="badge state-{_text(timeline["state"])}">{_text(timeline["state"])}</span>'
        f"</h2><p>tenant {_text(timeline['tenant'])}"
        + (" · " + _buttons(ACTIONS_ON_CONNECTOR, timeline["connector_id"]) if may_act else "")
        + f'</p>{verdict}{more}<div class="scroll"><table class="events"><thead><tr><th>#</th>'
        "<th>at</th><th>event</th><th>incident</th><th>attempt</th><th>mode</th><th>actor</th>"
        "<th>failure</th><th>receipt and attributes</th><th>hash</th><th>log position</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></div></div>"
    )


def _favicon(prefix: str) -> str:
    return f'<link rel="icon" type="image/svg+xml" href="{escape(prefix)}/static/favicon.svg">'


def _tenant_filter(tenant: str | None) -> str:
    """Every tenant for a platform-wide user; a tenant user's own, the only choice."""
    if tenant is None:
        return '<select id="f-tenant"><option value="">all</option></select>'
    return (
        f'<select id="f-tenant" disabled title="you see tenant {escape(tenant)} only">'
        f'<option value="{escape(tenant)}" selected>{escape(tenant)}</option></select>'
    )


def render_page(
    snapshot: dict[str, Any], user: User, csrf: str, prefix: str, slo_s: float | None
) -> str:
    scope = "every tenant" if user.scope.tenant is None else f"tenant {user.scope.tenant}"
    role = "admin" if user.may_act else "read-only"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{escape(csrf)}">'
        f'<meta name="base" content="{escape(prefix)}">'
        "<title>connector-recovery · admin</title>"
        + _favicon(prefix)
        + f'<link rel="stylesheet" href="{escape(prefix)}/static/vendor/uPlot.min.css">'
        f'<link rel="stylesheet" href="{escape(prefix)}/static/dashboard.css"></head><body>'
        '<header><h1>connector-recovery</h1><span class="who">'
        f"{escape(user.name)} · {escape(role)} · {escape(scope)}</span>"
        f'<form method="post" action="{escape(prefix)}/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit">sign out</button></form></header>'
        '<p id="answer" role="status" aria-live="polite"></p>'
        '<nav class="filters"><label>tenant '
        + _tenant_filter(user.scope.tenant)
        + '</label><label>state <select id="f-state"><option value="">all</option>'
        + "".join(f'<option value="{s}">{s}</option>' for s in STATES)
        + '</select></label><label>search <input id="f-text" type="search" '
        'placeholder="connector, failure, episode"></label>'
        '<span id="live-status" class="live-status">connecting…</span></nav>'
        f'<main id="live">{render_live(snapshot, slo_s, may_act=user.may_act)}</main>'
        '<section id="timeline" aria-label="timeline"></section>'
        f'<script src="{escape(prefix)}/static/vendor/uPlot.iife.min.js"></script>'
        f'<script src="{escape(prefix)}/static/charts.js"></script>'
        f'<script src="{escape(prefix)}/static/dashboard.js"></script></body></html>'
    )


def render_login(prefix: str, message: str | None) -> str:
    problem = f'<p class="error">{escape(message)}</p>' if message else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>connector-recovery · sign in</title>"
        + _favicon(prefix)
        + f'<link rel="stylesheet" href="{escape(prefix)}/static/dashboard.css"></head><body>'
        '<main class="login"><h1>connector-recovery</h1>'
        f'{problem}<form method="post" action="{escape(prefix)}/login">'
        '<label>dashboard token <input type="password" name="token" autocomplete="off" '
        'autofocus required></label><button type="submit">sign in</button></form>'
        "</main></body></html>"
    )
