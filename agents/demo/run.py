"""`connector-recovery demo`: the README's main command.

Starts a local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), a worker, a local webhook
receiver for the admins (the Platform Admin's pages through Debian's Alertmanager when it is
installed: agents/demo/alerting.py), and a simulated fleet of 50 connectors with injected faults
(see agents/demo/simulate.py). A live view shows connector states, open incidents and MTTR; the
demo itself plays the Platform Admin for the incidents that need one. It ends with a summary
read from the audit log, verified. `--connect` adds a real Kafka Connect worker with
FileStream connectors watched by `probe kafka-connect` (agents/demo/connect.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaConnectionError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from agents.admin import build_command, send_and_wait
from agents.broker.client import reader, start_client, topic_partitions
from agents.broker.jvm import HOME, LocalKafkaError
from agents.broker.local import Broker, answers_metadata
from agents.demo.alerting import DemoAlertmanager
from agents.demo.connect import BROKEN, DemoConnect
from agents.demo.simulate import ERP_DB, ERP_DB_CONNECTORS, Simulation, behind_erp_db
from agents.settings import Settings, Topics
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from streams.decider import PLATFORM_ADMIN
from streams.grouping import is_outage_key
from streams.models import AdminAction, AuditEvent, EventType, NotificationKind
from streams.projections import (
    Episode,
    Outage,
    Projection,
    group_totals,
    tenant_key,
    totals,
)
from streams.timefmt import ms_from_iso
from streams.verify import Verifier

console = Console(width=None if sys.stdout.isatty() else 120)
DURATION_S = float(os.environ.get("CR_DEMO_SECONDS", "75"))
DASHBOARD_PORT = 6070  # `connector-recovery dashboard`'s default
DEMO_TOKEN = "demo"  # noqa: S105 - the demo page's published sign-in token; its sha256 is in the policy
DEMO_ADMIN = "demo-admin"
# The scripted Platform Admin handles every incident but this connector's (a credential
# failure, not retryable): the newcomer gets one to act on, on the page or with the CLI.
LEFT_FOR_YOU = "SFDC-CRM"


class Inbox:
    """Local webhook receiver: counts what each audience was told."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                inbox.received[self.path] = inbox.received.get(self.path, 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:  # keep the demo's screen clean
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_kafka() -> tuple[str, int | None, bool]:
    """The bootstrap address; the port of the local broker when the demo uses one, and
    whether this copy of the project started it (and so `kafka down` here stops it)."""

    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        if not answers_metadata(configured):  # else the worker fails, after a wait, in its log
            raise KafkaConnectionError(f"Unable to bootstrap from {configured}")
        return configured, None, False

    broker = Broker(int(os.environ.get("KAFKA_PORT", "9092")))
    console.print(f"[bold]Kafka:[/] {broker.up()}")
    return broker.bootstrap, broker.port, broker.pid() is not None


def env_prefix(run: str, local_port: int | None) -> str:
    """What a command needs before it in a shell to reach this run's topics."""
    env = {"CR_TOPIC_PREFIX": f"{run}."}
    if local_port is None:
        env = {"KAFKA_BOOTSTRAP_SERVERS": os.environ["KAFKA_BOOTSTRAP_SERVERS"], **env}
    elif "KAFKA_PORT" in os.environ:
        env = {"KAFKA_PORT": str(local_port), **env}
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())


def next_steps(run: str, local_port: int | None, home: Path, ours: bool = True) -> list[str]:
    """The closing screen's exact commands: the run's data is on topics of its own prefix."""
    prefix = env_prefix(run, local_port)
    lines = [
        f"This run's data is on the topics prefixed {run}. (e.g. {run}.connector.audit); "
        "look at it with:",
        f"  {prefix} connector-recovery report --format html --out demo-report.html",
        f"  {prefix} connector-recovery verify",
        f"  {prefix} connector-recovery replay --connector SAP-AR",
        f"  {prefix} connector-recovery dashboard --policy {shlex.quote(str(home / 'policy.yaml'))}"
        f" --port {DASHBOARD_PORT}",
        f"the last one serves the admin page on http://127.0.0.1:{DASHBOARD_PORT}/dashboard/"
        f" (token: {DEMO_TOKEN}) until Ctrl-C",
        f"The worker's log and policy are in {home}",
    ]
    if local_port is not None and ours:
        port_env = f"KAFKA_PORT={local_port} " if "KAFKA_PORT" in os.environ else ""
        lines.append(
            f"The local Kafka broker is still running on 127.0.0.1:{local_port}; "
            f"stop it with: {port_env}connector-recovery kafka down"
        )
    elif local_port is not None:
        lines.append(
            f"The Kafka broker on 127.0.0.1:{local_port} is still running; it was not started "
            "from this copy of the project: stop it from where it was started"
        )
    return lines


def left_open(events: list[AuditEvent]) -> Episode | None:
    """The incident the scripted admin left for the newcomer, if it is still open."""
    projection = Projection(detail=False).apply_all(events)
    episodes = [
        e
        for e in projection.episodes.values()
        if e.connector_id == LEFT_FOR_YOU and e.incident_open
    ]
    return max(episodes, key=lambda e: e.detected_at, default=None)


def act_on_it(
    episode: Episode | None, run: str, local_port: int | None, web_port: int, keep: bool
) -> list[str]:
    """The closing screen's part on the incident left open: which, and how to act on it
    (on the page and with the CLI) while the worker and the fleet are up."""
    if episode is None:
        return [f"No incident is left open for you: {LEFT_FOR_YOU}'s was closed meanwhile."]
    connector, incident = episode.connector_id, episode.incident_id
    lines = [
        f"Left open for you: incident {incident}: {connector} (tenant "
        f"{episode.tenant_id or '_platform'}) failed with {episode.failure}, which no automatic"
        " retry fixes; the Platform Admin was told, and nobody has acted yet.",
    ]
    if not keep:
        return [
            *lines,
            "The worker and the fleet have stopped with the demo: to act on such an incident,"
            " run `connector-recovery demo --keep`; they then stay up until Ctrl-C.",
        ]
    prefix = env_prefix(run, local_port)
    return [
        *lines,
        f"Act on it on the admin page, http://127.0.0.1:{web_port}/dashboard/ (token:"
        f" {DEMO_TOKEN}): Acknowledge {incident}, then Recover {connector} (the incident closes"
        " when it has recovered); or from another terminal:",
        f"  {prefix} connector-recovery ack {incident} --actor {DEMO_ADMIN}",
        f"  {prefix} connector-recovery recover {connector} --actor {DEMO_ADMIN}",
        f"  connector-recovery status --web-port {web_port}",
        "The worker, the fleet and the admin page stay up until Ctrl-C.",
    ]


def _start_alertmanager(home: Path, inbox: Inbox) -> DemoAlertmanager | None:
    """Debian's Alertmanager for the Platform Admin's pages, when it is installed."""
    if not DemoAlertmanager.installed():
        return None
    alertmanager = DemoAlertmanager(home, inbox.url)
    if not alertmanager.start():
        console.print(
            f"[yellow]Alertmanager did not start (see {alertmanager.log}):"
            " the Platform Admin gets a webhook[/]"
        )
        return None
    console.print(
        f"[bold]Alertmanager:[/] {alertmanager.url} pages the Platform Admin"
        f" (alerts: {alertmanager.url}/api/v2/alerts)"
    )
    return alertmanager


def _stop(worker: subprocess.Popen[str] | None, alertmanager: DemoAlertmanager | None) -> None:
    if worker is not None:
        worker.terminate()
        worker.wait(60)
    if alertmanager is not None:
        alertmanager.stop()


def _policy(
    inbox: Inbox, connectors: str = "", alertmanager: DemoAlertmanager | None = None
) -> str:
    closed = _free_port()  # nothing listens there: initech's webhook is down
    connectors_block = f"connectors:\n{connectors}" if connectors else ""
    platform_admin = (
        f'{{type: alertmanager, url: "{alertmanager.url}", resend_s: 10}}'
        if alertmanager is not None
        else f'{{webhook: "{inbox.url}/platform"}}'
    )
    return (
        connectors_block
        + f"""
defaults:
  max_retries: 3
  attempt_timeout_s: 4
  heartbeat_timeout_s: 30
  backoff: {{base_s: 0.5, cap_s: 2}}
tenants:
  acme: {{webhook: "{inbox.url}/acme"}}
  globex: {{webhook: "{inbox.url}/globex"}}
  initech: {{webhook: "http://127.0.0.1:{closed}/initech"}}
platform_admin: {platform_admin}
escalation:
  - {{after_s: 20, target: {{webhook: "{inbox.url}/oncall"}}}}
dependencies:  # what the ERP connectors of the three tenants share: down, one outage
  {ERP_DB}: {{connectors: {json.dumps(list(ERP_DB_CONNECTORS))}}}
admins: [demo-admin]
dashboard:  # the admin page, signed in with the token "demo" (its sha256 below)
  users:
    demo-admin:
      token_sha256: 2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea
"""
    )


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
        return json.load(response)


def _mttr(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            lines = r.read().decode().splitlines()
    except OSError:
        return "?"
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("connector_time_to_recover_seconds_sum")
    ]
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("connector_time_to_recover_seconds_count")
    ]
    return (
        f"{sum(values) / sum(counts):.1f}s over {sum(counts):.0f} recoveries"
        if sum(counts)
        else "-"
    )


def _status(port: int) -> dict[str, Any]:
    try:
        status: dict[str, Any] = _get_json(port, "/status")
    except OSError:
        return {"connectors": [], "open_incidents": []}
    return status


def _view(
    status: dict[str, Any], mttr: str, sim: Simulation, elapsed: float, actions: list[str]
) -> Group:
    failing = [c for c in status["connectors"] if c["phase"] == "FAILED"]
    table = Table(
        title=f"connector-recovery demo — {elapsed:4.0f}s / {DURATION_S:.0f}s, "
        f"{sim.sent} pings, {sim.restarts} restarts"
    )
    for column in ("connector", "tenant", "state", "failure", "attempts", "incident"):
        table.add_column(column)
    for row in failing[:14]:
        state = "FLAPPING" if row["flapping"] else "FAILED"
        incident = (
            ("open" + (", acked" if row["acknowledged"] else "")) if row["incident_open"] else ""
        )
        table.add_row(
            row["connector_id"],
            row["tenant_id"] or "_platform",
            state,
            row["failure"] or "",
            str(row["attempts"]),
            incident,
        )
    if not failing:
        table.add_row("(none failing)", "", "", "", "", "")
    healthy = len(sim.connectors) - len(failing)
    now_ms = time.time_ns() // 1_000_000
    incidents = Table(title="open incidents (they need a human)")
    for column in ("incident", "connector", "tenant", "age", "acknowledged by"):
        incidents.add_column(column)
    for incident in status["open_incidents"][:8]:
        age_s = (now_ms - ms_from_iso(incident["opened_at"])) / 1000
        incidents.add_row(
            incident["incident_id"],
            incident["connector_id"],
            incident["tenant_id"] or "_platform",
            f"{age_s:.0f}s",
            incident.get("acknowledged_by") or "nobody yet",
        )
    if not status["open_incidents"]:
        incidents.add_row("(none open)", "", "", "", "")
    open_outages = status.get("open_outages", [])
    footer = Table.grid()
    footer.add_row(
        f"healthy or recovered: {healthy}   failing: {len(failing)}   "
        f"open incidents: {len(status['open_incidents'])}   "
        f"open outages: {len(open_outages)}   MTTR so far: {mttr}"
    )
    for action in actions[-4:]:
        footer.add_row(f"[cyan]{action}[/]")
    if not open_outages:
        return Group(table, incidents, footer)
    return Group(table, incidents, _outages_table(open_outages, now_ms), footer)


def _outages_table(open_outages: list[dict[str, Any]], now_ms: int) -> Table:
    outages = Table(title="open outages (connectors failing for one cause: paged once)")
    for column in ("outage", "group", "connectors", "opened"):
        outages.add_column(column)
    for outage in open_outages[:4]:
        age_s = (now_ms - ms_from_iso(outage["opened_at"])) / 1000
        outages.add_row(
            outage["outage_id"],
            outage["group"],
            str(outage["connectors"]),
            f"{age_s:.0f}s ago",
        )
    return outages


async def _play_admin(
    settings: Settings,
    port: int,
    actions: list[str],
    stop: asyncio.Event,
    repairs: dict[str, Callable[[], str]],
) -> None:
    """The Platform Admin: acknowledge open incidents, repair what it knows how to (`repairs`
    by connector), then recover the connector; all but `LEFT_FOR_YOU`'s. An incident of a
    connector behind the ERP database (the outage's probe, whose retries ran out while the
    database was down) is acknowledged and left to the outage: no restart helps while the
    database is down, and the worker closes the incident when the connector recovers."""
    handled: set[str] = set()
    left_to_outage: dict[str, str] = {}  # incident id -> connector
    while not stop.is_set():
        await asyncio.sleep(2)
        try:
            incidents = _get_json(port, "/status")["open_incidents"]
        except OSError:
            continue
        still_open = {incident["incident_id"] for incident in incidents}
        for incident_id, connector_id in list(left_to_outage.items()):
            if incident_id not in still_open:
                del left_to_outage[incident_id]
                actions.append(
                    f"incident {incident_id} closed: {connector_id} recovered when"
                    f" {ERP_DB} answered again"
                )
        for incident in incidents:
            incident_id = incident["incident_id"]
            if (
                incident_id in handled
                or incident["failure"] == "flapping"
                or incident["connector_id"] == LEFT_FOR_YOU
            ):
                continue
            handled.add(incident_id)
            if behind_erp_db(incident["connector_id"]):
                command = build_command(
                    AdminAction.ACKNOWLEDGE,
                    incident_id,
                    DEMO_ADMIN,
                    reason=f"{ERP_DB} is down: left to its outage, no restart helps meanwhile",
                )
                answers = await send_and_wait(settings, command, 20)
                actions.append(
                    f"admin acknowledge {incident_id}: {_verdict(answers)}; left to the"
                    f" {ERP_DB} outage (no recover while {ERP_DB} is down)"
                )
                left_to_outage[incident_id] = incident["connector_id"]
                continue
            repair = repairs.get(incident["connector_id"])
            if repair is not None:
                actions.append(repair())
            for action, target in (
                (AdminAction.ACKNOWLEDGE, incident_id),
                (AdminAction.RECOVER, incident["connector_id"]),
            ):
                command = build_command(
                    action, target, DEMO_ADMIN, reason="Platform Admin intervenes (demo)"
                )
                answers = await send_and_wait(settings, command, 20)
                actions.append(f"admin {action.value.lower()} {target}: {_verdict(answers)}")
            if _recovered_meanwhile(answers):
                # The incident stays open until someone closes it: the admin does, saying why.
                command = build_command(
                    AdminAction.RESOLVE,
                    incident_id,
                    DEMO_ADMIN,
                    reason="the connector recovered by itself before the admin's recover",
                )
                answers = await send_and_wait(settings, command, 20)
                actions.append(f"admin resolve {incident_id}: {_verdict(answers)}")


def _recovered_meanwhile(answers: list[AuditEvent]) -> bool:
    return bool(answers) and "is not failed" in answers[0].attributes.get("rejection", "")


def _verdict(answers: list[AuditEvent]) -> str:
    if not answers:
        return "no answer"
    answer = answers[0]
    if answer.type is EventType.COMMAND_REJECTED:
        # The decider refuses what the connector's state does not allow (e.g. recovering a
        # connector that recovered by itself meanwhile); the event carries its reason.
        return (
            f"{answer.type.value}: the worker refused it, "
            f"because {answer.attributes.get('rejection', 'no reason recorded')}"
        )
    return answer.type.value


def _summary(events: list[AuditEvent]) -> int:
    verifier = Verifier(grace_ms=60_000)
    projection = Projection()
    for index, event in enumerate(events):
        if verifier.check(event, str(index)):
            projection.apply(event)
    findings = [f for f in verifier.finish() if not f.benign]
    episodes = list(projection.episodes.values())
    table = Table(title="Summary from the audit log (replayed)")
    for column in ("tenant", "failures", "recovered", "open incidents", "MTTR mean", "p50", "p90"):
        table.add_column(column)
    rows = {**group_totals(episodes, "tenant"), "ALL": totals(episodes)}
    for tenant, figures in rows.items():
        mttr = figures.mttr_seconds
        table.add_row(
            tenant,
            str(figures.failure_count),
            str(figures.recovered_count),
            str(figures.open_incidents),
            *(f"{v:.1f}s" if v is not None else "-" for v in (mttr.mean, mttr.p50, mttr.p90)),
        )
    console.print(table)
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.type.value] = kinds.get(event.type.value, 0) + 1
    console.print("events: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    for line in _outage_lines(events, projection):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    manual = [e for e in episodes if e.mode == "MANUAL"]
    console.print(f"manual recoveries: {', '.join(e.connector_id for e in manual) or 'none'}")
    for receipt in [e.receipt_attributes for e in episodes if e.receipt][:1]:
        console.print(f"a recovery receipt: {json.dumps(receipt, sort_keys=True)}")
    if findings:
        console.print(f"[red]verify: {len(findings)} finding(s)[/]")
        for finding in findings[:10]:
            console.print(
                f"  {finding.kind} {finding.connector_id} #{finding.sequence}: {finding.detail}"
            )
        return 1
    console.print(
        f"[green]verify: {len(events)} events, hash chains intact, no gaps, "
        f"no compliance findings[/]"
    )
    return 0


def _outage_lines(events: list[AuditEvent], projection: Projection) -> list[str]:
    """The closing summary's outages (as the report's `outages`), each with the pages it
    sent the Platform Admin and the pages of its connectors it stood for."""

    def tenant_of(incident_id: str) -> str | None:
        episode = projection.episodes.get(incident_id)
        return None if episode is None else episode.tenant_id

    outages = sorted(projection.outages.values(), key=lambda o: (o.opened_at, o.outage_id))
    resolved = sum(1 for o in outages if o.resolved_at is not None)
    lines = [f"outages: {len(outages)} opened, {resolved} resolved, {len(outages) - resolved} open"]
    for outage in outages:
        lines += _outage_line(outage, events, tenant_of)
    return lines


def _outage_line(
    outage: Outage, events: list[AuditEvent], tenant_of: Callable[[str], str | None]
) -> list[str]:
    connectors = sorted(set(outage.connectors))
    tenants = sorted({tenant_key(tenant_of(i)) for i in outage.incidents})
    if outage.mttr_ms is None:
        ended = "still open"
    else:
        ended = f"resolved after {outage.mttr_ms / 1000:.1f}s ({outage.recovered} recovered)"
    # The outage's pages to the Platform Admin, by kind (its dedup key ends with both), as
    # recorded on its chain; and its connectors' own pages it stood for.
    platform_pages: dict[str, int] = {}
    held = 0
    for event in events:
        if is_outage_key(event.connector_id):
            if (
                event.incident_id == outage.outage_id
                and event.type in (EventType.NOTIFICATION_SENT, EventType.NOTIFICATION_FAILED)
                and event.attributes.get("target") == PLATFORM_ADMIN
            ):
                kind = str(event.attributes.get("dedup_key", "")).split(":")[-2]
                platform_pages[kind] = platform_pages.get(kind, 0) + 1
        elif (
            event.type is EventType.NOTIFICATION_SUPPRESSED
            and event.attributes.get("outage_id") == outage.outage_id
        ):
            held += 1
    opened = platform_pages.get(NotificationKind.OUTAGE_OPENED.value, 0)
    resolved = platform_pages.get(NotificationKind.OUTAGE_RESOLVED.value, 0)
    escalated = platform_pages.get(NotificationKind.INCIDENT_ESCALATED.value, 0)
    escalations = (
        f", and {_times(escalated)} because a tenant's notification of it failed"
        if escalated
        else ""
    )
    return [
        f"  {outage.outage_id}: {len(connectors)} connectors of {', '.join(tenants)} failing"
        f" for one cause ({outage.group}: {', '.join(connectors)}), {ended}",
        f"  the Platform Admin was paged {_times(opened)} when it opened, not once per"
        f" connector, and {_times(resolved)} when it was resolved{escalations}; {held} pages"
        " of its connectors were held for it (notification.suppressed, reason outage)",
    ]


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


async def _read_audit(settings: Settings) -> list[AuditEvent]:
    consumer = reader(settings)
    await start_client(consumer)
    try:
        tps = await topic_partitions(consumer, settings.topics.audit)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        events: list[AuditEvent] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                events.extend(decode_audit(registry(), r.value) for r in records)
        return events
    finally:
        await consumer.stop()


class DemoError(Exception):
    """What stops the demo before it starts, as the one line to print."""


def web_port() -> int:
    """`CR_WEB_PORT` when set (the worker's port, and its admin page's), checked free; else
    any free port."""

    configured = os.environ.get("CR_WEB_PORT")
    if not configured:
        return _free_port()
    try:
        port = int(configured)
    except ValueError:
        raise DemoError(f"CR_WEB_PORT={configured!r} is not a port number") from None
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            raise DemoError(
                f"CR_WEB_PORT={port}: cannot serve there ({error.strerror}): stop what"
                " listens on it, or set CR_WEB_PORT to a free port"
            ) from None
    return port


def run_demo(with_connect: bool = False, keep: bool = False) -> int:
    """The demo; with `keep`, the worker, the fleet and the admin page stay up after the
    closing screen, until Ctrl-C."""

    try:
        port = web_port()
        bootstrap, local_port, ours = _ensure_kafka()
    except (LocalKafkaError, DemoError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = Settings.from_env().but(
        bootstrap_servers=bootstrap, app_id=run, topics=Topics().with_prefix(f"{run}.")
    )

    home = HOME / run  # never the current directory: the demo runs from any folder
    home.mkdir(parents=True, exist_ok=True)
    inbox = Inbox()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CR_APP_ID": run,
        "CR_TOPIC_PREFIX": f"{run}.",
        "CR_TICK_INTERVAL_S": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    connect = DemoConnect(bootstrap, run, home, env) if with_connect else None
    if connect is not None:
        console.print(f"[bold]Kafka Connect:[/] {connect.start()}")
    alertmanager = _start_alertmanager(home, inbox)
    policy = home / "policy.yaml"
    policy.write_text(_policy(inbox, connect.policy_lines() if connect else "", alertmanager))

    def closing(events: list[AuditEvent]) -> int:
        lines = next_steps(run, local_port, home, ours)
        lines += act_on_it(left_open(events), run, local_port, port, keep)
        return _closing_screen(inbox, events, lines)

    console.print(f"[bold]Worker:[/] starting ({run}, web on 127.0.0.1:{port}) ...")
    verdicts: list[int] = []
    events: list[AuditEvent] = []
    worker: subprocess.Popen[str] | None = None
    try:
        worker = _start_worker(home, policy, port, env)
        if not _ready(worker, home / "worker.log"):
            console.print(f"[red]the worker did not start; see {home / 'worker.log'}[/]")
            return 2
        console.print("[bold]Worker:[/] ready — starting a fleet of 50 connectors")
        console.print(
            f"[bold]Admin page:[/] http://127.0.0.1:{port}/dashboard/ (token: {DEMO_TOKEN})"
        )
        repairs = {}
        if connect is not None:
            connect.start_probe(home / "probe.log")
            repairs[BROKEN] = connect.repair
            console.print(f"[bold]Probe:[/] watching {connect.url} (log {home / 'probe.log'})")
        hold = (lambda read: verdicts.append(closing(read))) if keep else None
        events = asyncio.run(_live(settings, port, repairs, hold))
    finally:
        _stop(worker, alertmanager)
        if connect is not None:
            console.print(connect.summary())
            connect.stop()
    if keep:
        return verdicts[0] if verdicts else 130  # 130: stopped before the closing screen
    return closing(events)


def _closing_screen(inbox: Inbox, events: list[AuditEvent], lines: list[str]) -> int:
    """What the webhooks heard, the verified summary, then `lines`; the summary's verdict."""
    console.print(f"webhooks received: {dict(sorted(inbox.received.items()))}")
    verdict = _summary(events)
    for line in lines:
        # one line each, never wrapped: they are meant to be copied
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    return verdict


def _ready(worker: subprocess.Popen[str], log: Path, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while "ready" not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _start_worker(
    home: Path, policy: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    with (home / "worker.log").open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "worker",
                "--policy",
                str(policy),
                "--data-dir",
                str(home / "data"),
                "--web-port",
                str(port),
                "--loglevel",
                "info",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


async def _until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (handled here: a shell starts a background job with
    SIGINT ignored, so Python would raise no KeyboardInterrupt for it)."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    console.print("stopping the worker, the fleet and the admin page")


async def _live(
    settings: Settings,
    port: int,
    repairs: dict[str, Callable[[], str]],
    hold: Callable[[list[AuditEvent]], object] | None = None,
) -> list[AuditEvent]:
    """The fleet and the scripted admin for `DURATION_S`, on a live view; then the audit
    log's events. With `hold`, it is given the events and the fleet runs on until Ctrl-C
    or SIGTERM."""
    sim = Simulation(settings, duration_s=DURATION_S)
    fleet_stop, admin_stop = asyncio.Event(), asyncio.Event()
    actions: list[str] = []
    fleet = asyncio.create_task(sim.run(math.inf if hold else DURATION_S, fleet_stop))
    admin = asyncio.create_task(_play_admin(settings, port, actions, admin_stop, repairs))
    started = time.monotonic()
    elapsed = 0.0
    try:
        with Live(
            _view(_status(port), "-", sim, 0, actions), console=console, refresh_per_second=2
        ) as live:
            while not fleet.done() and elapsed < DURATION_S:
                await asyncio.sleep(1)
                elapsed = time.monotonic() - started
                live.update(_view(_status(port), _mttr(port), sim, elapsed, actions))
            # The last frame stays on the screen: without the actions, printed once below.
            live.update(_view(_status(port), _mttr(port), sim, elapsed, []))
        console.line()  # off a terminal, the last frame ends without a newline
        admin_stop.set()
        await admin
        if hold is None:
            fleet_stop.set()
            await fleet
        for action in actions:
            console.print(f"[cyan]{action}[/]")
        events = await _read_audit(settings)
        if hold is not None:
            hold(events)
            await _until_stopped()
        return events
    finally:
        admin_stop.set()
        fleet_stop.set()
        await asyncio.gather(fleet, admin, return_exceptions=True)
