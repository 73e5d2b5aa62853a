"""The compliance report: JSON (a contract for downstream tools), Markdown, and one
self-contained HTML file. Built from the same projections and verify fold as everything
else; with a tenant scope nothing about other tenants appears in any output."""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from agents.audit.log import LogRead, Scope
from streams.evidence import RECEIPT_KEYS
from streams.models import AuditEvent
from streams.projections import (
    Episode,
    Figures,
    Projection,
    group_totals,
    outage_report,
    tenant_key,
    totals,
)
from streams.state import Record
from streams.timefmt import iso_from_ms, ms_from_iso
from streams.verify import DEFAULT_GRACE_MS, Finding, Verifier


class _Projecting(Protocol):
    """What the verify fold feeds: a `Projection`, or `Figures` (no detail)."""

    records: dict[str, Record]

    def apply(self, event: AuditEvent, folded: Record) -> None: ...


def _fold(
    read: LogRead,
    scope: Scope,
    projection: _Projecting | None,
    extra_findings: list[Finding] | None = None,
    *,
    as_of_ms: int | None = None,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
) -> tuple[list[Finding], int]:
    """Verify the scoped chains in one pass over the events, holding none of them, and feed
    each new one to `projection` with its folded record (when there is one); returns
    (findings, events read). `after_read` adds the findings of a check that needs the whole
    log read first (the manifest's, the checkpoints')."""
    in_scope = scope.connectors(read.events)
    verifier = Verifier(DEFAULT_GRACE_MS)
    check, record_of = verifier.check, verifier.record_of
    apply = None if projection is None else projection.apply
    count = 0
    for position, event in read.events:
        if in_scope is not None and event.connector_id not in in_scope:
            continue
        if as_of_ms is not None and event.occurred_at > as_of_ms:
            continue
        count += 1
        if check(event, position) and apply is not None:
            apply(event, record_of(event.connector_id))
    if projection is not None:
        projection.records = verifier.records()
    later = after_read(read) if after_read is not None else []
    findings = [
        f
        for f in read.findings + (extra_findings or []) + later
        if in_scope is None or f.connector_id in in_scope
    ]
    findings += verifier.finish()
    return findings, count


def fold_scope(
    read: LogRead,
    scope: Scope,
    extra_findings: list[Finding] | None = None,
    *,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
    detail: bool = True,
) -> tuple[Projection, list[Finding], int]:
    """Verify and project the scoped chains in one pass (`_fold`); returns (projection,
    findings, events read). Without `detail` the projection keeps no timelines or
    receipts."""
    projection = Projection(detail)
    findings, count = _fold(read, scope, projection, extra_findings, after_read=after_read)
    return projection, findings, count


def _episodes(projection: Projection, scope: Scope) -> list[Episode]:
    return [e for e in projection.episodes.values() if scope.in_period(e.detected_at)]


def _iso(value: int | None) -> str | None:
    return None if value is None else iso_from_ms(value)


def _source(read: LogRead, scope: Scope) -> str:
    return read.source if scope.tenant is None else "audit log"


def _verification(findings: list[Finding]) -> dict[str, Any]:
    return {
        "ok": all(f.benign for f in findings),
        "findings": [f.as_dict() for f in findings],
    }


def verification(
    read: LogRead,
    scope: Scope,
    *,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
) -> dict[str, Any]:
    """What `verify` shows, the report's `source`, `events` and `verification`, from the
    verify fold alone (no figures)."""
    findings, count = _fold(read, scope, None, after_read=after_read)
    return {
        "source": _source(read, scope),
        "events": count,
        "verification": _verification(findings),
    }


def build(
    read: LogRead,
    scope: Scope,
    extra_findings: list[Finding] | None = None,
    *,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
    detail: bool = True,
) -> dict[str, Any]:
    """The report; without `detail` (replay) it has no `incidents`, no receipts, which hold
    a line per event, and no per-connector figures (a line per connector): then the fold
    keeps `Figures` rather than episodes."""
    if detail:
        projection, findings, count = fold_scope(read, scope, extra_findings, after_read=after_read)
        episodes = _episodes(projection, scope)
        overall, by_tenant = totals(episodes), group_totals(episodes, "tenant")
        outages = outage_report(
            projection.outages.values(), projection.tenant_of, scope.in_period, detail=True
        )
    else:
        figures = Figures()
        findings, count = _fold(read, scope, figures, extra_findings, after_read=after_read)
        overall, by_tenant = figures.totals(scope.in_period)
        outages = outage_report(
            figures.outages.values(), figures.tenant_of, scope.in_period, detail=False
        )
    built: dict[str, Any] = {
        "scope": {
            "tenant": scope.tenant,
            "connector": scope.connector,
            "since": _iso(scope.since_ms),
            "until": _iso(scope.until_ms),
        },
        "source": _source(read, scope),
        "events": count,
        "totals": overall.as_dict(),
        "tenants": {k: v.as_dict() for k, v in by_tenant.items()},
        "outages": outages,
        "verification": _verification(findings),
    }
    if detail:
        built["connectors"] = {
            connector_id: figures.as_dict()
            for connector_id, figures in group_totals(episodes, "connector").items()
        }
        for episode in episodes:
            wire = episode.receipt_attributes
            if wire:
                receipt = {k: wire[k] for k in RECEIPT_KEYS if k in wire}
                built["connectors"][episode.connector_id].setdefault("receipts", []).append(receipt)
        for figures in built["connectors"].values():
            figures.setdefault("receipts", [])
        built["incidents"] = [
            _incident(e) for e in sorted(episodes, key=lambda e: (e.detected_at, e.incident_id))
        ]
    return built


def _incident(e: Episode) -> dict[str, Any]:
    wire = e.receipt_attributes
    return {
        "incident_id": e.incident_id,
        "connector_id": e.connector_id,
        "tenant_id": tenant_key(e.tenant_id),
        "failure": e.failure,
        "detected_at": _iso(e.detected_at),
        "recovered_at": _iso(e.recovered_at),
        "opened_at": _iso(e.opened_at),
        "acknowledged_at": _iso(e.acknowledged_at),
        "resolved_at": _iso(e.resolved_at),
        "mode": e.mode,
        "mttr_seconds": None if e.mttr_ms is None else e.mttr_ms / 1000,
        "receipt": None if wire is None else {k: wire[k] for k in RECEIPT_KEYS if k in wire},
        "timeline": [
            {"at": iso_from_ms(at), "event": kind, "sequence": seq}
            for at, kind, seq in e.timeline or ()
        ],
    }


def state_as_of(read: LogRead, scope: Scope, as_of_ms: int) -> dict[str, Any]:
    """Time travel: every connector and incident as they were at `as_of_ms`."""
    figures = Figures()
    _, count = _fold(read, scope, figures, as_of_ms=as_of_ms)
    return {
        "as_of": iso_from_ms(as_of_ms),
        "events": count,
        "connectors": {
            cid: {
                "phase": r.phase.value,
                "incident_id": r.incident_id,
                "failure": r.failure,
                "attempts": r.attempts,
                "incident_open": r.incident_open,
                "flapping": r.flapping,
                "sequence": r.sequence,
            }
            for cid, r in sorted(figures.records.items())
        },
        "open_incidents": sorted(figures.open_incidents()),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _incidents_and_episodes(
    report: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The report's `incidents` key holds every failure episode; an incident is an episode
    that opened one (retries exhausted, or not retryable), as the totals count them."""
    episodes = report["incidents"]
    opened = [e for e in episodes if e["opened_at"] is not None]
    return opened, [e for e in episodes if e["opened_at"] is None]


def markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    scope = report["scope"]
    lines = [
        "# Connector recovery: compliance report",
        "",
        f"Scope: tenant `{scope['tenant'] or 'all'}`, connector `{scope['connector'] or 'all'}`,"
        f" from {scope['since'] or 'the beginning'} to {scope['until'] or 'the end'}.",
        "",
        "| failures | recovered | open incidents | MTTR mean (s) | p50 | p90 | p99 |",
        "|---|---|---|---|---|---|---|",
        f"| {t['failure_count']} | {t['recovered_count']} | {t['open_incidents']} | "
        f"{_fmt(t['mttr_seconds']['mean'])} | {_fmt(t['mttr_seconds']['p50'])} | "
        f"{_fmt(t['mttr_seconds']['p90'])} | {_fmt(t['mttr_seconds']['p99'])} |",
        "",
        "## Tenants",
        "",
        "| tenant | failures | recovered | open | MTTR mean (s) |",
        "|---|---|---|---|---|",
    ]
    for tenant, f in report["tenants"].items():
        lines.append(
            f"| {tenant} | {f['failure_count']} | {f['recovered_count']} | "
            f"{f['open_incidents']} | {_fmt(f['mttr_seconds']['mean'])} |"
        )
    incidents, automatic = _incidents_and_episodes(report)
    for title, episodes in (
        (f"Incidents: failures that needed a human ({len(incidents)})", incidents),
        (f"Failure episodes recovered automatically ({len(automatic)})", automatic),
    ):
        lines += ["", f"## {title}", ""]
        lines += [
            f"- **{episode['incident_id']}** ({episode['failure']}): detected "
            f"{episode['detected_at']}, recovered {episode['recovered_at'] or '—'}"
            f" ({episode['mode'] or 'open'})"
            for episode in episodes
        ]
    outages = report["outages"]
    if outages["count"]:
        lines += ["", f"## Outages: connectors that failed for one cause ({outages['count']})", ""]
        lines += [
            f"- **{o['outage_id']}** ({o['group']}): {len(o['connectors'])} connectors, opened "
            f"{o['opened_at']}, resolved {o['resolved_at'] or '—'}, MTTR "
            f"{_fmt(o['mttr_seconds'])} s"
            for o in outages["outages"]
        ]
    verdict = "passed" if report["verification"]["ok"] else "FAILED"
    lines += ["", f"## Verification: {verdict}", ""]
    lines += [
        f"- {f['kind']} {f['connector_id']} #{f['sequence']} at {f['position']}: {f['detail']}"
        for f in report["verification"]["findings"]
    ]
    return "\n".join(lines) + "\n"


AXIS_COLOUR = "#335577"  # the charts' axes and ticks (the rendering test looks for it)
POINT_COLOUR = "#d9822b"
BAR_COLOUR = "#4a7fb5"
CHART_COLOURS = {"axis": AXIS_COLOUR, "point": POINT_COLOUR, "bar": BAR_COLOUR}
# The admin page's charts (uPlot, vendored and pinned, and the code that draws with it):
# the report inlines them, so it stays one file that loads nothing from elsewhere.
CHART_ASSETS = Path(__file__).resolve().parents[1] / "dashboard" / "static"
MTTR_BUCKETS_S = (5, 15, 30, 60, 120, 300, 900, 3600)


def _chart(spec: dict[str, Any], label: str) -> str:
    data = html.escape(json.dumps(spec, separators=(",", ":")))
    return (
        f'<figure class="chart" role="img" aria-label="{html.escape(label)}" '
        f'data-chart="{data}"><div class="plot"></div></figure>'
    )


def _recoveries_chart(incidents: list[dict[str, Any]]) -> str:
    """MTTR (seconds, y) of each recovery against when it recovered (UTC, x)."""
    points = sorted(
        (ms_from_iso(i["recovered_at"]) / 1000, i["mttr_seconds"])
        for i in incidents
        if i["mttr_seconds"] is not None
    )
    if not points:
        return "<p>no recoveries</p>"
    spec = {
        "kind": "recoveries",
        "colours": CHART_COLOURS,
        "recovered_at": [at for at, _ in points],
        "mttr_s": [mttr for _, mttr in points],
    }
    return _chart(spec, "MTTR over time")


def _distribution_chart(incidents: list[dict[str, Any]]) -> str:
    values = [i["mttr_seconds"] for i in incidents if i["mttr_seconds"] is not None]
    edges = [0, *MTTR_BUCKETS_S, math.inf]
    counts = [sum(1 for v in values if low < v <= high) for low, high in itertools.pairwise(edges)]
    spec = {
        "kind": "distribution",
        "colours": CHART_COLOURS,
        "buckets": [f"≤{b}s" for b in MTTR_BUCKETS_S] + [">1h"],
        "counts": counts,
    }
    return _chart(spec, "MTTR distribution")


def _chart_assets() -> tuple[str, str]:
    """(style, script) of the charts, to inline: uPlot's, then ours."""
    style = (CHART_ASSETS / "vendor" / "uPlot.min.css").read_text()
    script = "\n".join(
        (CHART_ASSETS / name).read_text() for name in ("vendor/uPlot.iife.min.js", "charts.js")
    )
    return style, script


def html_report(report: dict[str, Any]) -> str:
    t = report["totals"]
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{f['failure_count']}</td><td>{f['recovered_count']}</td>"
        f"<td>{f['open_incidents']}</td><td>{_fmt(f['mttr_seconds']['mean'])}</td>"
        f"<td>{_fmt(f['mttr_seconds']['p90'])}</td></tr>"
        for k, f in report["tenants"].items()
    )

    def timelines(episodes: list[dict[str, Any]]) -> str:
        return (
            "".join(
                f"<details><summary>{esc(i['incident_id'])} — {esc(str(i['failure']))}, "
                f"{esc(i['mode'] or 'open')}</summary><ol>"
                + "".join(f"<li>{esc(s['at'])} {esc(s['event'])}</li>" for s in i["timeline"])
                + "</ol></details>"
                for i in episodes
            )
            or "<p>none</p>"
        )

    incidents, automatic = _incidents_and_episodes(report)
    ok = report["verification"]["ok"]
    findings = "".join(
        f"<li>{esc(f['kind'])} {esc(f['connector_id'])} #{f['sequence']}: {esc(f['detail'])}</li>"
        for f in report["verification"]["findings"]
    )
    scope = report["scope"]
    chart_style, chart_script = _chart_assets()
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Connector recovery: compliance report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.ok{{color:#176b2c}}.bad{{color:#a11}}
.totals{{background:#eef4fa;padding:8px 12px;border-radius:4px}}
.totals span{{display:inline-block;margin-right:2em;font-size:18px}}
@media print{{details{{display:block}}details>ol{{display:block}}}}
figure.chart{{margin:0;width:720px;max-width:100%}}figure.chart .plot{{position:relative}}
.u-legend td,.u-legend th{{border:none;padding:0 4px}}
{chart_style}</style></head><body>
<h1>Connector recovery: compliance report</h1>
<p>Scope: tenant <b>{esc(scope["tenant"] or "all")}</b>, connector
<b>{esc(scope["connector"] or "all")}</b>, from {esc(scope["since"] or "the beginning")} to
{esc(scope["until"] or "the end")}; {report["events"]} audit events.</p>
<div class="totals" id="totals"><span>failures <b>{t["failure_count"]}</b></span>
<span>recovered <b>{t["recovered_count"]}</b></span>
<span>open incidents <b>{t["open_incidents"]}</b></span>
<span>MTTR mean <b>{_fmt(t["mttr_seconds"]["mean"])} s</b></span>
<span>p90 <b>{_fmt(t["mttr_seconds"]["p90"])} s</b></span></div>
<h2>Tenants</h2><table><tr><th>tenant</th><th>failures</th><th>recovered</th><th>open</th>
<th>MTTR mean (s)</th><th>p90 (s)</th></tr>{rows}</table>
<h2>MTTR over time</h2>{_recoveries_chart(report["incidents"])}
<h2>MTTR distribution</h2>{_distribution_chart(report["incidents"])}
<h2>Incidents: failures that needed a human ({len(incidents)})</h2>{timelines(incidents)}
<h2>Failure episodes recovered automatically ({len(automatic)})</h2>{timelines(automatic)}
<h2>Verification: <span class="{"ok" if ok else "bad"}">{"passed" if ok else "FAILED"}</span>
</h2><ul>{findings}</ul>
<p><small>MTTR = recovery.completed minus failure.detected; percentiles by nearest rank.
Charts drawn by uPlot (MIT licence, inlined).</small></p>
<script>{chart_script}</script>
<script>window.crCharts.drawAll(document);</script>
</body></html>
"""


def as_json(report: dict[str, Any]) -> str:
    """`json.dumps(report, indent=2, sort_keys=True)`, by orjson when what it writes is
    ASCII (then it is the same text, in a fraction of the time); the standard library's
    encoder for the rest (escaped non-ASCII, integers beyond 64 bits)."""
    try:
        text = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        text = ""
    if not text or not text.isascii():
        text = json.dumps(report, indent=2, sort_keys=True)
    return text + "\n"


# The seed's recovery log: its five keys first, in its order, then who and what else.
RECOVERY_LOG_KEYS = ("connector_id", "failure", "retries", "status", "timestamp")
_INTEGER_RECEIPT_KEYS = ("retries", "duration_ms")  # text on the wire, numbers in the log


def recovery_receipts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recovery receipt of the report's period, oldest first, in the seed's shape
    (`connector_id`, `failure`, `retries` as an integer, `status`, `timestamp`), with the
    incident, tenant and actor, and the rest of the receipt as the JSON report has it."""
    entries = []
    for incident in report["incidents"]:
        receipt = incident.get("receipt")
        if receipt is None:
            continue
        entry: dict[str, Any] = {key: receipt.get(key) for key in RECOVERY_LOG_KEYS}
        entry["incident_id"] = incident["incident_id"]
        entry["tenant_id"] = incident["tenant_id"]
        entry["actor"] = receipt.get("actor")
        entry.update((key, value) for key, value in receipt.items() if key not in entry)
        for key in _INTEGER_RECEIPT_KEYS:
            entry[key] = int(entry[key])
        entries.append(entry)
    return sorted(entries, key=lambda e: (e["timestamp"], e["incident_id"]))


def as_yaml(report: dict[str, Any]) -> str:
    """The recovery log: a YAML list of `recovery_receipts`, under a comment that names
    the scope (a tenant scope holds only that tenant's receipts, as the other formats)."""
    import yaml  # noqa: PLC0415 - only this format needs it

    scope = report["scope"]
    receipts = recovery_receipts(report)
    header = (
        f"# recovery receipts: tenant {scope['tenant'] or 'all'}, connector "
        f"{scope['connector'] or 'all'}, from {scope['since'] or 'the beginning'} to "
        f"{scope['until'] or 'the end'}; {len(receipts)} receipt(s)\n"
    )
    if not receipts:
        return header + "[]\n"
    body = yaml.safe_dump(receipts, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body


FORMATS = ("json", "md", "html", "yaml")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return as_json(report)
    if fmt == "md":
        return markdown(report)
    if fmt == "html":
        return html_report(report)
    if fmt == "yaml":
        return as_yaml(report)
    raise ValueError(f"unknown format {fmt!r}")
