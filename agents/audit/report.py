"""The compliance report: JSON (a contract for downstream tools), Markdown, and one
self-contained HTML file. Built from the same projections and verify fold as everything
else; with a tenant scope nothing about other tenants appears in any output."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from agents.audit.log import LogRead, Scope
from streams.projections import Episode, Projection, group_totals, tenant_key, totals
from streams.timefmt import iso_from_ms
from streams.verify import DEFAULT_GRACE_MS, Finding, Verifier

RECEIPT_KEYS = (
    "connector_id",
    "failure",
    "retries",
    "status",
    "timestamp",
    "detected_at",
    "recovered_at",
    "duration_ms",
    "mode",
    "actor",
    "position_at_failure",
    "position_at_recovery",
)


def fold_scope(
    read: LogRead,
    scope: Scope,
    extra_findings: list[Finding] | None = None,
    *,
    as_of_ms: int | None = None,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
    detail: bool = True,
) -> tuple[Projection, list[Finding], int]:
    """Verify and project the scoped chains in one pass over the events, holding none of
    them; returns (projection, findings, events read). `after_read` adds the findings of a
    check that needs the whole log read first (the manifest's, the checkpoints'); without
    `detail` the projection keeps no timelines or receipts."""
    in_scope = scope.connectors(read.events)
    verifier = Verifier(DEFAULT_GRACE_MS)
    projection = Projection(detail)
    count = 0
    for position, event in read.events:
        if in_scope is not None and event.connector_id not in in_scope:
            continue
        if as_of_ms is not None and event.occurred_at > as_of_ms:
            continue
        count += 1
        if verifier.check(event, position):
            projection.apply(event, verifier.record_of(event.connector_id))
    later = after_read(read) if after_read is not None else []
    findings = [
        f
        for f in read.findings + (extra_findings or []) + later
        if in_scope is None or f.connector_id in in_scope
    ]
    findings += verifier.finish()
    return projection, findings, count


def _episodes(projection: Projection, scope: Scope) -> list[Episode]:
    return [e for e in projection.episodes.values() if scope.in_period(e.detected_at)]


def _iso(value: int | None) -> str | None:
    return None if value is None else iso_from_ms(value)


def build(
    read: LogRead,
    scope: Scope,
    extra_findings: list[Finding] | None = None,
    *,
    after_read: Callable[[LogRead], list[Finding]] | None = None,
    detail: bool = True,
) -> dict[str, Any]:
    """The report; without `detail` (replay, verify) it has no `incidents` and no receipts,
    which hold a line per event."""
    projection, findings, count = fold_scope(
        read, scope, extra_findings, after_read=after_read, detail=detail
    )
    episodes = _episodes(projection, scope)
    problems = [f for f in findings if not f.benign]
    built: dict[str, Any] = {
        "scope": {
            "tenant": scope.tenant,
            "connector": scope.connector,
            "since": _iso(scope.since_ms),
            "until": _iso(scope.until_ms),
        },
        "source": read.source if scope.tenant is None else "audit log",
        "events": count,
        "totals": totals(episodes).as_dict(),
        "connectors": {
            connector_id: figures.as_dict()
            for connector_id, figures in group_totals(episodes, "connector").items()
        },
        "tenants": {k: v.as_dict() for k, v in group_totals(episodes, "tenant").items()},
        "verification": {"ok": not problems, "findings": [f.as_dict() for f in findings]},
    }
    if detail:
        for episode in episodes:
            if episode.receipt:
                receipt = {k: episode.receipt[k] for k in RECEIPT_KEYS if k in episode.receipt}
                built["connectors"][episode.connector_id].setdefault("receipts", []).append(receipt)
        for figures in built["connectors"].values():
            figures.setdefault("receipts", [])
        built["incidents"] = [
            _incident(e) for e in sorted(episodes, key=lambda e: (e.detected_at, e.incident_id))
        ]
    return built


def _incident(e: Episode) -> dict[str, Any]:
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
        "timeline": [
            {"at": iso_from_ms(at), "event": kind, "sequence": seq} for at, kind, seq in e.timeline
        ],
    }


def state_as_of(read: LogRead, scope: Scope, as_of_ms: int) -> dict[str, Any]:
    """Time travel: every connector and incident as they were at `as_of_ms`."""
    projection, _, count = fold_scope(read, scope, as_of_ms=as_of_ms, detail=False)
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
            for cid, r in sorted(projection.records.items())
        },
        "open_incidents": sorted(
            e.incident_id for e in projection.episodes.values() if e.incident_open
        ),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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
    lines += ["", "## Incidents", ""]
    for incident in report["incidents"]:
        lines.append(
            f"- **{incident['incident_id']}** ({incident['failure']}): detected "
            f"{incident['detected_at']}, recovered {incident['recovered_at'] or '—'}"
            f" ({incident['mode'] or 'open'})"
        )
    verdict = "passed" if report["verification"]["ok"] else "FAILED"
    lines += ["", f"## Verification: {verdict}", ""]
    lines += [
        f"- {f['kind']} {f['connector_id']} #{f['sequence']} at {f['position']}: {f['detail']}"
        for f in report["verification"]["findings"]
    ]
    return "\n".join(lines) + "\n"


def _svg_points(incidents: list[dict[str, Any]]) -> str:
    points = [(i["recovered_at"], i["mttr_seconds"]) for i in incidents if i["mttr_seconds"]]
    width, height = 640, 200
    if not points:
        return (
            f'<svg width="{width}" height="{height}"><text x="10" y="20">no recoveries</text></svg>'
        )
    top = max(v for _, v in points) or 1
    step = width / max(len(points), 1)
    dots = "".join(
        f'<circle cx="{20 + k * step:.1f}" cy="{height - 20 - v / top * (height - 40):.1f}" '
        f'r="4"><title>{html.escape(t)}: {v:.1f}s</title></circle>'
        for k, (t, v) in enumerate(sorted(points))
    )
    return (
        f'<svg role="img" aria-label="MTTR over time" width="{width}" height="{height}">'
        f'<line x1="20" y1="{height - 20}" x2="{width}" y2="{height - 20}" stroke="#999"/>'
        f'<text x="22" y="14">max {top:.1f}s</text>{dots}</svg>'
    )


def _svg_histogram(incidents: list[dict[str, Any]]) -> str:
    bounds = [5, 15, 30, 60, 120, 300, 900, 3600]
    values = [i["mttr_seconds"] for i in incidents if i["mttr_seconds"] is not None]
    counts = [
        sum(1 for v in values if (b0 < v <= b1))
        for b0, b1 in zip([0, *bounds], [*bounds, float("inf")], strict=True)
    ]
    labels = [f"≤{b}s" for b in bounds] + [">1h"]
    width, height = 640, 200
    top = max(counts) or 1
    bar = width / len(counts)
    bars = "".join(
        f'<rect x="{k * bar + 4:.1f}" y="{height - 30 - c / top * (height - 50):.1f}" '
        f'width="{bar - 8:.1f}" height="{c / top * (height - 50):.1f}" fill="#4a7fb5">'
        f'<title>{c}</title></rect><text x="{k * bar + 6:.1f}" y="{height - 12}" '
        f'font-size="11">{labels[k]}</text>'
        for k, c in enumerate(counts)
    )
    return (
        f'<svg role="img" aria-label="MTTR distribution" width="{width}" '
        f'height="{height}">{bars}</svg>'
    )


def html_report(report: dict[str, Any]) -> str:
    t = report["totals"]
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{f['failure_count']}</td><td>{f['recovered_count']}</td>"
        f"<td>{f['open_incidents']}</td><td>{_fmt(f['mttr_seconds']['mean'])}</td>"
        f"<td>{_fmt(f['mttr_seconds']['p90'])}</td></tr>"
        for k, f in report["tenants"].items()
    )
    timelines = "".join(
        f"<details><summary>{esc(i['incident_id'])} — {esc(str(i['failure']))}, "
        f"{esc(i['mode'] or 'open')}</summary><ol>"
        + "".join(f"<li>{esc(s['at'])} {esc(s['event'])}</li>" for s in i["timeline"])
        + "</ol></details>"
        for i in report["incidents"]
    )
    ok = report["verification"]["ok"]
    findings = "".join(
        f"<li>{esc(f['kind'])} {esc(f['connector_id'])} #{f['sequence']}: {esc(f['detail'])}</li>"
        for f in report["verification"]["findings"]
    )
    scope = report["scope"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Connector recovery: compliance report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.ok{{color:#176b2c}}.bad{{color:#a11}}
.totals{{background:#eef4fa;padding:8px 12px;border-radius:4px}}
.totals span{{display:inline-block;margin-right:2em;font-size:18px}}
@media print{{details{{display:block}}details>ol{{display:block}}}}</style></head><body>
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
<h2>MTTR over time</h2>{_svg_points(report["incidents"])}
<h2>MTTR distribution</h2>{_svg_histogram(report["incidents"])}
<h2>Incidents</h2>{timelines}
<h2>Verification: <span class="{"ok" if ok else "bad"}">{"passed" if ok else "FAILED"}</span>
</h2><ul>{findings}</ul>
<p><small>MTTR = recovery.completed minus failure.detected; percentiles by nearest rank.</small></p>
</body></html>
"""


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "md":
        return markdown(report)
    if fmt == "html":
        return html_report(report)
    raise ValueError(f"unknown format {fmt!r}")
