"""`connector-recovery` — the command line of every persona."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from aiokafka.errors import KafkaConnectionError, KafkaError

from agents.broker.client import (
    describe,
    hide_reported_connect_failures,
    no_broker,
    remember_connect_failures,
)
from agents.broker.producer import MissingTopic
from agents.settings import SettingsError
from streams.policy import PolicyError

if TYPE_CHECKING:
    from agents.settings import Settings

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _settings(args: argparse.Namespace) -> Settings:
    from agents.settings import Settings

    settings = Settings.from_env()
    changes = {}
    if getattr(args, "policy", None):
        changes["policy_path"] = Path(args.policy)
    if getattr(args, "web_port", None):
        changes["web_port"] = args.web_port
    if getattr(args, "data_dir", None):
        changes["data_dir"] = Path(args.data_dir)
    return settings.but(**changes) if changes else settings


def cmd_kafka(args: argparse.Namespace) -> int:
    from agents.broker import local as localkafka

    argv = [args.action] + (["--port", str(args.port)] if args.port else [])
    return localkafka.main(argv)


def cmd_connect(args: argparse.Namespace) -> int:
    from agents.connect import local as localconnect

    argv = [args.action]
    if args.port:
        argv += ["--port", str(args.port)]
    if args.bootstrap:
        argv += ["--bootstrap", args.bootstrap]
    return localconnect.main(argv)


def cmd_probe_kafka_connect(args: argparse.Namespace) -> int:
    from agents.connect.probe import ConnectProbe, run_until_signalled

    if not args.url.startswith(("http://", "https://")):
        print(f"error: --url {args.url!r} is not an http(s) URL of Kafka Connect", file=sys.stderr)
        return EXIT_ERROR
    if args.interval <= 0 or args.grace <= 0:
        print("error: --interval and --grace must be positive seconds", file=sys.stderr)
        return EXIT_ERROR
    logging.getLogger("connector_recovery.probe").setLevel(logging.INFO)
    probe = ConnectProbe(
        _settings(args),
        args.url,
        interval_s=args.interval,
        tenant_key=args.tenant_key,
        grace_s=args.grace,
    )
    try:
        run_until_signalled(probe, args.metrics_port or None)
    except OSError as error:  # the /metrics port is taken (the loop itself handles outages)
        print(
            f"error: cannot serve /metrics on port {args.metrics_port}: {error.strerror or error};"
            " choose another --metrics-port",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from agents.broker.topics import AuditTopicMisconfigured, prepare_worker
    from agents.dashboard.server import Dashboard
    from agents.policyfile import load_policy
    from agents.worker.app import WorkerApp
    from agents.worker.restore import RestoringWorker

    settings = _settings(args)
    policy = load_policy(settings.policy_path)  # a PolicyError is main's one line
    try:
        settings = settings.but(kafka_cluster_id=asyncio.run(prepare_worker(settings)))
    except AuditTopicMisconfigured as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KafkaConnectionError:
        raise  # main's one line: no broker, and how to start one
    except Exception as error:  # other failures: say what and where, not a traceback
        print(
            f"error: cannot prepare topics on {settings.bootstrap_servers}: {describe(error)}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    # Faust creates only the last level of its data directory.
    settings.worker_state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    pipeline = WorkerApp(settings, policy, loglevel=args.loglevel)
    # The admin page on the worker's web server, over the worker's own live views.
    Dashboard(settings, policy, pipeline.follower).mount(pipeline.web_app)
    # Restores the state table in bulk before Faust replays its changelog (P5).
    worker = RestoringWorker(
        pipeline.app,
        settings,
        # The views' snapshot is restored while Faust starts, not after its assignment.
        before_start=pipeline.follower.begin,
        loglevel=args.loglevel,
        quiet=True,
        redirect_stdouts=False,
    )
    # Faust's terminal spinner sets the root logger to DEBUG so it can spin on every record:
    # every debug call in aiokafka and Faust then builds a LogRecord (~9% of a busy worker's
    # CPU in a py-spy profile) and the spinner writes control characters into our output.
    worker.spinner = None
    worker.execute_from_commandline()
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from agents.broker.producer import ping_from_fields, pings_from_jsonl, publish_pings

    settings = _settings(args)
    try:
        if args.file:
            pings = pings_from_jsonl(Path(args.file))
        else:
            if not args.connector or not args.status:
                print("error: --connector and --status (or --file) are required", file=sys.stderr)
                return EXIT_ERROR
            fields = {
                "connector_id": args.connector,
                "status": args.status,
                "tenant_id": args.tenant,
                "failure": args.failure,
                "retryable": not args.not_retryable,
                "position": args.position,
                "dependency": args.dependency,
            }
            if args.status.lower() == "unhealthy" and not args.failure:
                fields["failure"] = "unknown"
            pings = [ping_from_fields(fields)]
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    sent = asyncio.run(publish_pings(settings, settings.topics.health, pings))
    print(f"published {sent} ping(s) to {settings.topics.health}")
    return EXIT_OK


def cmd_admin(args: argparse.Namespace) -> int:
    from agents import admin
    from streams.models import AdminAction, EventType
    from streams.timefmt import ms_from_iso

    action = AdminAction[ADMIN_ACTIONS[args.command]]
    try:
        settings = _settings(args)
        actor = admin.actor_for(settings, args.actor)
        until = ms_from_iso(args.until) if getattr(args, "until", None) else None
        command = admin.build_command(
            action, args.target, actor, reason=getattr(args, "reason", None), until_ms=until
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        answers = admin.run(settings, command, args.timeout)
    except (KafkaConnectionError, MissingTopic):
        raise  # main's one line: no broker, or no topic, and what to do
    except Exception as error:  # anything else the broker answered: say so, exit 2
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_ERROR
    if not answers:
        print(f"error: no answer within {args.timeout:g}s (is a worker running?)", file=sys.stderr)
        return EXIT_ERROR
    for event in answers:
        if event.type is EventType.COMMAND_REJECTED:
            print(f"rejected: {admin.rejection(event)}")
            return EXIT_FINDINGS
    for event in answers:
        print(f"accepted: {event.type.value} {event.event_id} incident={event.incident_id}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import urllib.parse
    import urllib.request

    from rich.console import Console
    from rich.table import Table

    settings = _settings(args)
    query = {"limit": str(args.limit)}
    if args.tenant:
        query["tenant"] = args.tenant
    if args.after:
        query["after"] = args.after
    url = f"http://127.0.0.1:{settings.web_port}/status?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status = json.load(response)
    except OSError:
        print(
            f"error: no worker answers at {url} (start one with: connector-recovery worker; "
            "or pass its --web-port)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="connectors")
    for column in ("connector", "tenant", "phase", "episode", "attempts", "last event"):
        table.add_column(column)
    for row in status["connectors"]:
        phase = row["phase"] + (" (flapping)" if row["flapping"] else "")
        table.add_row(
            row["connector_id"],
            row["tenant_id"] or "_platform",
            phase,
            row["incident_id"] or "",
            str(row["attempts"]),
            row["last_event_at"],
        )
    console.print(table)
    if status.get("next_after") is not None:
        print(
            f"{len(status['connectors'])} of {status['connectors_total']} connectors shown;"
            f" the next: --after {status['next_after']}"
        )
    incidents = Table(title="open incidents (need a human)")
    for column in ("incident", "connector", "tenant", "failure", "opened", "acknowledged by"):
        incidents.add_column(column)
    for row in status["open_incidents"]:
        incidents.add_row(
            row["incident_id"],
            row["connector_id"],
            row["tenant_id"] or "_platform",
            row["failure"] or "",
            row["opened_at"] or "",
            row.get("acknowledged_by") or "",
        )
    if status["open_incidents"]:
        console.print(incidents)
    for outage in status.get("open_outages", []):
        print(
            f"open outage {outage['outage_id']}: {outage['connectors']} connectors failing for"
            f" one cause ({outage['group']}) since {outage['opened_at']}"
        )
    print(f"open incidents: {len(status['open_incidents'])}")
    return EXIT_OK


ADMIN_ACTIONS = {
    "ack": "ACKNOWLEDGE",
    "recover": "RECOVER",
    "resolve": "RESOLVE",
    "silence": "SILENCE",
    "retire": "RETIRE",
}


def cmd_simulate(args: argparse.Namespace) -> int:
    from agents.demo.simulate import Simulation

    simulation = Simulation(_settings(args), interval_s=args.interval)
    asyncio.run(simulation.run(args.seconds))
    print(
        f"published {simulation.sent} pings for {len(simulation.connectors)} connectors; "
        f"answered {simulation.restarts} recovery requests"
    )
    return EXIT_OK


def _read_scoped(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The log as a stream (the events are folded as they are read, never held), its scope,
    and the integrity check to run once it has been read."""
    from agents.audit import log as auditlog
    from streams.timefmt import ms_from_iso

    scope = auditlog.Scope(
        tenant=args.tenant,
        connector=args.connector,
        since_ms=ms_from_iso(args.since) if args.since else None,
        until_ms=ms_from_iso(args.until) if args.until else None,
    )
    if args.archive:
        path = Path(args.archive)
        if not path.is_file():
            raise OSError(f"no archive file {path}: give the path `export --out` wrote")
        read = auditlog.read_archive(path, quiet=args.quiet, stream=True)
        return read, scope, lambda done: auditlog.check_manifest(path, done)
    read = auditlog.read_topic(_settings(args), quiet=args.quiet, stream=True)
    return read, scope, auditlog.check_checkpoints


def _seconds(value: float | None) -> str:
    return "- (nothing recovered yet)" if value is None else f"{value} s"


def cmd_audit(args: argparse.Namespace) -> int:
    """replay, verify, report and export: read-only, for auditors."""
    try:
        read, scope, integrity = _read_scoped(args)
    except KafkaConnectionError:
        raise  # main's one line: no broker, and how to start one
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return _audit(args, read, scope, integrity)
    finally:
        read.close()


def _audit(args: argparse.Namespace, read: Any, scope: Any, integrity: Any) -> int:
    import json

    from agents.audit import log as auditlog
    from agents.audit import report
    from streams.timefmt import ms_from_iso

    if args.command == "export" and args.format == "yaml":
        built = report.build(read, scope, after_read=integrity)
        Path(args.out).write_text(report.render(built, "yaml"))
        receipts = len(report.recovery_receipts(built))
        print(f"exported {receipts} recovery receipt(s) to {args.out}")
        return EXIT_OK
    if args.command == "export":
        in_scope = scope.connectors(read.events)
        manifest = auditlog.export(
            read, Path(args.out), None if in_scope is None else in_scope.__contains__
        )
        print(
            f"exported {manifest['count']} events to {args.out} "
            f"(manifest {args.out}{auditlog.MANIFEST_SUFFIX})"
        )
        return EXIT_OK
    if args.command == "replay" and args.as_of:
        state = report.state_as_of(read, scope, ms_from_iso(args.as_of))
        print(json.dumps(state, indent=2))
        return EXIT_OK
    if args.command == "verify":
        built = report.verification(read, scope, after_read=integrity)
    else:
        built = report.build(read, scope, after_read=integrity, detail=args.command == "report")
    problems = [f for f in built["verification"]["findings"] if f["kind"] != "benign_duplicate"]
    if args.command == "report":
        text = report.render(built, args.format)
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text, end="")
    elif args.command == "verify":
        for finding in built["verification"]["findings"]:
            print(
                f"{finding['kind']}: {finding['connector_id']} sequence "
                f"{finding['sequence']} at {finding['position']}: {finding['detail']}"
            )
        verdict = "clean" if not problems else f"{len(problems)} finding(s)"
        print(f"verified {built['events']} events from {built['source']}: {verdict}")
    else:  # replay
        totals = built["totals"]
        print(f"replayed {built['events']} events from {built['source']}")
        mttr = totals["mttr_seconds"]
        print(
            f"failures {totals['failure_count']}, recovered {totals['recovered_count']}, "
            f"open incidents {totals['open_incidents']}, MTTR mean {_seconds(mttr['mean'])} "
            f"(p50 {_seconds(mttr['p50'])}, p90 {_seconds(mttr['p90'])}, "
            f"p99 {_seconds(mttr['p99'])})"
        )
        for tenant, figures in built["tenants"].items():
            print(
                f"  {tenant}: failures {figures['failure_count']}, recovered "
                f"{figures['recovered_count']}, MTTR mean "
                f"{_seconds(figures['mttr_seconds']['mean'])}"
            )
        outages = built["outages"]
        if outages["count"]:
            print(
                f"outages {outages['count']}, open {outages['open']}, MTTR mean "
                f"{_seconds(outages['mttr_seconds']['mean'])} (docs/outages.md)"
            )
        if problems:
            print(f"{len(problems)} verification finding(s): run `verify` for details")
    return EXIT_FINDINGS if problems else EXIT_OK


def _no_users(policy_path: Path | None) -> str:
    """Why nobody could sign in, and the one thing to do about it."""
    if policy_path is None:
        return (
            "no policy given: pass --policy FILE (or set CR_POLICY) with a dashboard.users"
            " section (see docs/dashboard.md)"
        )
    return (
        f"{policy_path} has no dashboard.users: add one, e.g. `dashboard: {{users: {{alice:"
        " {token_sha256: ...}}}` (see docs/dashboard.md)"
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    from agents.dashboard.page import slo_from_alerts
    from agents.dashboard.server import ALERT_RULES, serve
    from agents.policyfile import load_policy

    settings = _settings(args)
    policy = load_policy(settings.policy_path)  # a PolicyError is main's one line
    if not policy.dashboard.users:
        print(f"error: nobody could sign in: {_no_users(settings.policy_path)}", file=sys.stderr)
        return EXIT_ERROR
    rules = Path(args.alert_rules) if args.alert_rules else ALERT_RULES
    if args.alert_rules and slo_from_alerts(rules) is None:
        print(
            f"error: no ConnectorMTTRAboveSLO threshold in {rules}: pass the project's"
            " deploy/prometheus/alerts.yml (or rules with that alert)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        asyncio.run(serve(settings, policy, args.host, args.port, rules))
    except OSError as error:  # the port is taken, or the host is not ours
        print(f"error: cannot serve on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agents.demo.run import run_demo

    return run_demo(with_connect=args.connect, keep=args.keep)


def _add_publish(sub: Any) -> None:
    publish = sub.add_parser("publish", help="publish health pings")
    publish.add_argument("--connector")
    publish.add_argument("--status", choices=["healthy", "unhealthy", "HEALTHY", "UNHEALTHY"])
    publish.add_argument(
        "--failure",
        help="what failed, as free text (not a fixed set), e.g. timeout, auth, http_503;"
        " only with --status unhealthy (default there: unknown)",
    )
    publish.add_argument("--tenant")
    publish.add_argument("--position")
    publish.add_argument("--not-retryable", action="store_true")
    publish.add_argument(
        "--dependency",
        help="what the connector depends on, e.g. sap-prod: failures naming one dependency"
        " are grouped into one outage (docs/outages.md)",
    )
    publish.add_argument("--file", help="JSON lines, one ping per line")
    publish.set_defaults(func=cmd_publish)


def _add_admin_commands(sub: Any) -> None:
    for name, what, target in (
        ("ack", "acknowledge an incident (stops escalation) or an outage", "INCIDENT|OUTAGE"),
        (
            "recover",
            "start a manual recovery attempt (of an outage: of each connector still failing)",
            "CONNECTOR|OUTAGE",
        ),
        ("resolve", "close an incident, or an outage by hand", "INCIDENT|OUTAGE"),
        ("silence", "suppress notifications until a time", "CONNECTOR"),
        ("retire", "retire a connector", "CONNECTOR"),
    ):
        command = sub.add_parser(name, help=what)
        command.add_argument("target", metavar=target)
        command.add_argument(
            "--actor",
            help="who acts (default: $USER); with SASL it is the authenticated Kafka user",
        )
        command.add_argument("--timeout", type=float, default=30.0)
        if name in ("recover", "silence"):
            command.add_argument("--reason")
        if name == "resolve":
            command.add_argument("--note", dest="reason")
        if name == "silence":
            command.add_argument("--until", required=True, help="ISO-8601 time")
        command.set_defaults(func=cmd_admin)


def _add_dashboard_command(sub: Any) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="the admin page: a read-only fold of the audit topic, and actions"
    )
    dashboard.add_argument("--port", type=int, default=6070)
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--policy", help="policy YAML with a dashboard: section")
    dashboard.add_argument(
        "--alert-rules",
        help="Prometheus rules whose ConnectorMTTRAboveSLO threshold is the charts' SLO line"
        " (default: deploy/prometheus/alerts.yml of this checkout)",
    )
    dashboard.set_defaults(func=cmd_dashboard)


def _add_audit_commands(sub: Any) -> None:
    for name, what in (
        ("replay", "rebuild every connector and incident from the audit log"),
        ("verify", "check hash chains, gaps, duplicates and compliance gaps"),
        ("report", "the compliance report (json, md, html; yaml: the recovery receipts)"),
        (
            "export",
            "archive the audit log to an Avro container + manifest"
            " (--format yaml: the recovery receipts)",
        ),
    ):
        command = sub.add_parser(name, help=what)
        command.add_argument("--tenant")
        command.add_argument("--connector")
        command.add_argument("--since", help="ISO-8601 (episodes detected at or after)")
        command.add_argument("--until", help="ISO-8601 (episodes detected before)")
        command.add_argument("--archive", help="read an exported archive instead of the topic")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "replay":
            command.add_argument("--as-of", help="ISO-8601: the state as it was at that time")
        if name == "report":
            command.add_argument(
                "--format",
                choices=["json", "md", "html", "yaml"],
                default="json",
                help="yaml: the recovery log, one receipt per recovery of the period",
            )
            command.add_argument("--out")
        if name == "export":
            command.add_argument("--out", required=True)
            command.add_argument(
                "--format",
                choices=["avro", "yaml"],
                default="avro",
                help="avro: the whole log and a manifest; yaml: the period's recovery receipts",
            )
        command.set_defaults(func=cmd_audit)


def _add_demo_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="start Kafka and a worker, show a failure and recovery")
    demo.add_argument(
        "--connect",
        action="store_true",
        help="also a Kafka Connect worker with real FileStream connectors (one breaks)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="after the closing screen, keep the worker, the fleet and the admin page up"
        " (to act on the incident left open) until Ctrl-C",
    )
    demo.set_defaults(func=cmd_demo)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line that names the command's help (argparse prints the whole
    usage block first); subcommands inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {message} (see: {self.prog} --help)\n")


def _status_limit(text: str) -> int:
    from agents.audit.live import STATUS_PAGE_MAX

    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= STATUS_PAGE_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to {STATUS_PAGE_MAX}")
    return limit


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="connector-recovery",
        description="Detect and recover failing data connectors, with evidence.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Not `required`: argparse would then report a missing command before an unknown flag.
    sub = parser.add_subparsers(dest="command")

    kafka = sub.add_parser("kafka", help="local single-node Apache Kafka (KRaft)")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default: $KAFKA_PORT, else 9092); the controller listens on PORT+1",
    )
    kafka.set_defaults(func=cmd_kafka)

    connect = sub.add_parser("connect", help="local Kafka Connect worker (distributed mode)")
    connect.add_argument("action", choices=["up", "down", "status"])
    connect.add_argument("--port", type=int, default=None, help="REST port ($CONNECT_PORT, 8083)")
    connect.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the local broker)")
    connect.set_defaults(func=cmd_connect)

    probe = sub.add_parser("probe", help="watch a connector runtime and publish health pings")
    runtimes = probe.add_subparsers(dest="runtime", required=True)
    kafka_connect = runtimes.add_parser(
        "kafka-connect", help="every connector of a Kafka Connect cluster, until SIGTERM"
    )
    kafka_connect.add_argument(
        "--url", required=True, help="Kafka Connect REST, e.g. http://127.0.0.1:8083"
    )
    kafka_connect.add_argument(
        "--interval", type=float, default=10.0, help="seconds between checks"
    )
    kafka_connect.add_argument(
        "--tenant-key", default="tenant", help="connector config key holding the tenant id"
    )
    kafka_connect.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="seconds a connector may stay RESTARTING/UNASSIGNED before it counts as failed",
    )
    kafka_connect.add_argument(
        "--metrics-port", type=int, default=9469, help="port of the probe's /metrics (0: none)"
    )
    kafka_connect.set_defaults(func=cmd_probe_kafka_connect)

    worker = sub.add_parser("worker", help="run the Faust worker")
    worker.add_argument("--policy", help="policy YAML (see examples/policy.yaml)")
    worker.add_argument("--web-port", type=int)
    worker.add_argument("--data-dir")
    worker.add_argument("--loglevel", default=os.environ.get("CR_LOGLEVEL", "warning"))
    worker.set_defaults(func=cmd_worker)

    _add_publish(sub)
    _add_admin_commands(sub)

    status = sub.add_parser("status", help="connectors and open incidents of a worker")
    status.add_argument("--tenant")
    status.add_argument("--web-port", type=int)
    status.add_argument(
        "--limit", type=_status_limit, default=1000, help="connectors to show (1-10000)"
    )
    status.add_argument("--after", help="show the connectors after this id (the next page)")
    status.set_defaults(func=cmd_status)

    _add_audit_commands(sub)

    simulate = sub.add_parser("simulate", help="run the simulated fleet against any cluster")
    simulate.add_argument("--seconds", type=float, default=120.0)
    simulate.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    simulate.set_defaults(func=cmd_simulate)

    _add_dashboard_command(sub)

    _add_demo_command(sub)
    return parser


TIME_OPTIONS = {"since": "--since", "until": "--until", "as_of": "--as-of"}


def _bad_time_option(args: argparse.Namespace) -> str | None:
    """The first time option that is not ISO-8601, as the error to print (checked before any
    command reads a topic, so a typo costs nothing)."""
    from streams.timefmt import ms_from_iso

    for dest, option in TIME_OPTIONS.items():
        text = getattr(args, dest, None)
        if text is None:
            continue
        try:
            ms_from_iso(text)
        except ValueError:
            return f"{option}: not an ISO-8601 time: {text!r} (e.g. 2026-01-31T09:30:00Z)"
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("connector-recovery")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    remember_connect_failures()
    hide_reported_connect_failures()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("name a command, e.g. demo, worker, kafka up")
    bad_time = _bad_time_option(args)
    if bad_time is not None:
        print(f"error: {bad_time}", file=sys.stderr)
        return EXIT_ERROR
    try:
        code: int = args.func(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KafkaConnectionError as error:
        print(f"error: {no_broker(error, _settings(args).bootstrap_servers)}", file=sys.stderr)
        return EXIT_ERROR
    except MissingTopic as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except PolicyError as error:
        print(f"error: invalid policy: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KafkaError as error:  # refused, unauthorized: one line, exit 2
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
