"""Helpers for tests on the real broker: a worker subprocess, raw producers, the reference
fold. What the benchmarks need too (fresh names, topic readers, waits) lives in
agents/testing/kafka.py and is re-exported here."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from agents.testing.kafka import (
    Namespace,
    free_port,
    read_audit,
    read_records,
    run,
    wait_caught_up,
    wait_for,
    wait_processed,
)
from agents.wire.codec import registry
from agents.wire.records import unpack
from streams.decider import decide
from streams.grouping import is_outage_key
from streams.models import AuditEvent, DeciderInput
from streams.outages import OutageState, decide_outage_input
from streams.state import ConnectorState

__all__ = [
    "FLEET_POLICY",
    "Namespace",
    "Worker",
    "compare_with_reference",
    "false_pages",
    "fleet_policy",
    "free_broker_port",
    "free_port",
    "metric_samples",
    "processed_inputs",
    "produce_raw",
    "read_audit",
    "read_records",
    "reference_fold",
    "routed",
    "run",
    "wait_caught_up",
    "wait_for",
    "wait_for_audit",
    "wait_processed",
    "web_get",
    "wind_down",
]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x1f]")


FLEET_POLICY = """
defaults:
  max_retries: 2
  attempt_timeout_s: 1
  heartbeat_timeout_s: {heartbeat_s}
  backoff: {{base_s: 0.1, cap_s: 0.3}}
"""


def fleet_policy(directory: Path, heartbeat_s: int) -> Path:
    """The policy of the fleet tests: quick retries against a `command_topic` executor that
    nobody answers, so every failure window runs its attempts out."""
    path = directory / "policy.yaml"
    path.write_text(FLEET_POLICY.format(heartbeat_s=heartbeat_s))
    return path


def free_broker_port(avoid: frozenset[int] = frozenset()) -> int:
    """A port for a local broker: it and the one above it (the broker's controller listener)
    are free, and neither is in `avoid`."""

    while True:
        port = free_port()
        if port + 1 > 65535 or {port, port + 1} & avoid:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


class Worker:
    """`connector-recovery worker` as a subprocess with its own data dir and web port."""

    def __init__(
        self,
        ns: Namespace,
        name: str = "w1",
        policy: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        cwd: Path | None = None,
        default_data_dir: bool = False,
        data_dir: Path | None = None,
        own_process_group: bool = False,
        loglevel: str = "warning",
    ) -> None:
        """`default_data_dir`: no --data-dir and no CR_DATA_DIR, as a user who sets none.
        `own_process_group`: the worker and its router in a process group of their own, as
        a service manager runs them; `stop(whole_group=True)` then signals both."""
        self.ns = ns
        self.own_process_group = own_process_group
        self.loglevel = loglevel
        self.extra_env = env or {}
        self.name = name
        self.cwd = cwd
        self.default_data_dir = default_data_dir
        self.data_dir = data_dir or ns.tmp / f"{name}-data"
        self.web_port = free_port()
        self.policy = policy
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self, ready_timeout_s: float = 90) -> Worker:
        args = [
            sys.executable,
            "-m",
            "agents.cli",
            "worker",
            "--loglevel",
            self.loglevel,
            "--web-port",
            str(self.web_port),
        ]
        env = self.ns.env(**self.extra_env)
        if self.default_data_dir:
            env.pop("CR_DATA_DIR", None)
        else:
            args += ["--data-dir", str(self.data_dir)]
        if self.policy is not None:
            args += ["--policy", str(self.policy)]
        self.lines = []
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=self.own_process_group,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            wait_for(
                lambda: "ready" in self.lines or self._died(),
                ready_timeout_s,
                f"worker {self.name} to log 'ready'",
            )
        except TimeoutError as error:
            self.kill()
            raise TimeoutError(f"{error}; its output:\n" + self.output()[-4000:]) from None
        if self._died():
            raise RuntimeError(f"worker {self.name} exited:\n" + "\n".join(self.lines[-40:]))
        return self

    def _pump(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        with (self.ns.tmp / f"{self.name}.log").open("a") as log:
            for line in self.process.stdout:
                # faust draws a spinner with ANSI escapes even on a pipe
                self.lines.append(_ANSI.sub("", line))
                log.write(line)

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout_s: float = 30, *, whole_group: bool = False) -> int:
        """SIGTERM to the worker (`whole_group`: to its process group, the router too, as
        `systemctl stop` or a terminal's Ctrl-C reaches every process); its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        if whole_group:
            assert self.own_process_group, "a group signal would reach the tests too"
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def router_pid(self) -> int:
        """The pid of the worker's router process (agents/worker/router_process.py)."""
        assert self.process is not None
        pid = self.process.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if b"agents.worker.router_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        raise LookupError(f"worker {self.name} (pid {pid}) has no router process")

    @contextmanager
    def router_frozen(self) -> Iterator[None]:
        """The router stopped (SIGSTOP) for the block, then continued: the worker's inputs
        fall behind the external topics for as long as the test says, on any machine."""
        pid = self.router_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Stoppable(Protocol):
    def stop(self) -> int: ...


def wind_down(ns: Namespace, worker: Worker, fleet: Stoppable, timeout_s: float = 600) -> int:
    """End a run with a live fleet so that every page in the audit log is a real one: the
    fleet stops, the worker drains what is left (seconds: it kept up with the fleet), then
    stops cleanly (exit 0 asserted) long before any connector's heartbeat could be truly
    missed. The audit log changes no more after it; compare it with the reference fold of
    what the worker processed (`processed_inputs`). Returns what the fleet sent."""
    sent = fleet.stop()
    wait_caught_up(ns, timeout_s=timeout_s)
    code = worker.stop()
    assert code == 0, f"worker {worker.name} exited {code}:\n" + worker.output()[-3000:]
    return sent


def web_get(worker: Worker, path: str) -> bytes:
    """A page of the worker's web server (`/status`, `/metrics`, `/healthz`, ...)."""

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=5) as r:
        body: bytes = r.read()
        return body


def metric_samples(exposition: str) -> dict[str, float]:
    """Prometheus text exposition → {'name{labels}': value}."""
    out = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for_audit(
    ns: Namespace, predicate: Callable[[list[AuditEvent]], bool], timeout_s: float, what: str
) -> list[AuditEvent]:
    def poll() -> list[AuditEvent] | None:
        events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=1)
        return events if predicate(events) else None

    return wait_for(poll, timeout_s, what, interval_s=0.3)


async def _produce(
    bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def produce_raw(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    run(_produce(bootstrap, topic, items))


def reference_fold(
    ns: Namespace, policy: Any, processed: Mapping[int, int] | None = None
) -> dict[str, list[AuditEvent]]:
    """The events the core derives from the inputs topic as it is, each input once, in
    partition order: what the audit log must hold, exactly. `processed` (of a stopped
    worker, `processed_inputs`): only the inputs before those offsets, per partition; a
    tick the clock sent while the worker was being stopped is then left for its next
    start, as the worker left it."""

    inputs_topic = f"{ns.app_id}-inputs"
    states: dict[str, ConnectorState] = {}
    outages: dict[str, OutageState] = {}
    expected: dict[str, list[AuditEvent]] = {}
    records = read_records(ns.bootstrap, inputs_topic, timeout_s=5)
    reg = registry()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if processed is not None and record.offset >= processed.get(record.partition, 0):
            continue
        for item in unpack(reg, record.value, inputs_topic, record.partition, record.offset):
            message = item.message
            assert message is not None, item.problem
            key = message.connector_id
            if is_outage_key(key):
                outage = outages.get(key) or OutageState.new(key)
                judged = decide_outage_input(outage, message, policy, item.source)
                if judged is not None:
                    outages[key] = judged.state
                    expected.setdefault(key, []).extend(judged.events)
                continue
            state = states.get(key) or ConnectorState.new(key)
            # an outage key's inputs went above: the rest are a connector's
            decision = decide(state, cast(DeciderInput, message), policy, item.source)
            states[key] = decision.state
            expected.setdefault(key, []).extend(decision.events)
    return expected


def compare_with_reference(
    ns: Namespace,
    policy: Any,
    processed: Mapping[int, int] | None = None,
    settle_s: float = 60,
) -> dict[str, int]:
    """Figures: reference events, lost, conflicting duplicates, benign duplicates, extra.

    With `processed` the worker is stopped: one comparison. Without it the worker runs on,
    and its clock's ticks (a retry due, an attempt timed out) keep adding inputs and their
    events, so one pass can catch an input before its events, or events whose input came
    after the inputs were read. The log is then read before the inputs (every logged
    event's input is in what is read after it) and the pair is read again, once the worker
    has caught up, until it agrees or `settle_s` passes. A real loss or extra event stays
    in every pass: the log is immutable and the fold of the same inputs is the same."""
    deadline = time.monotonic() + settle_s
    while True:
        logged_events = _logged_by_position(ns)
        expected = reference_fold(ns, policy, processed)
        figures, missing = _compare(expected, logged_events)
        settled = not (figures["lost"] or figures["conflicting_duplicates"] or figures["extra"])
        if processed is not None or settled or time.monotonic() > deadline:
            break
        wait_caught_up(ns)
    if missing:
        reference = {(e.connector_id, e.sequence) for evs in expected.values() for e in evs}
        print("lost (first 10):", sorted(missing)[:10])
        print("extra (first 10):", sorted(k for k in logged_events if k not in reference)[:10])
        _print_first_divergences(expected, logged_events, missing)
    return figures


def _logged_by_position(ns: Namespace) -> dict[tuple[str, int], list[AuditEvent]]:
    logged: dict[tuple[str, int], list[AuditEvent]] = {}
    for event in read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5):
        logged.setdefault((event.connector_id, event.sequence), []).append(event)
    return logged


def _compare(
    expected: Mapping[str, list[AuditEvent]],
    logged_events: Mapping[tuple[str, int], list[AuditEvent]],
) -> tuple[dict[str, int], list[tuple[str, int]]]:
    logged = {key: {e.hash for e in events} for key, events in logged_events.items()}
    reference = {(e.connector_id, e.sequence): e.hash for evs in expected.values() for e in evs}
    missing = [key for key, digest in reference.items() if digest not in logged.get(key, set())]
    copies = sum(len(events) for events in logged_events.values())
    figures = {
        "reference_events": len(reference),
        "audit_records": copies,
        "lost": len(missing),
        "conflicting_duplicates": sum(1 for hashes in logged.values() if len(hashes) > 1),
        "benign_duplicates": copies - len(logged),
        "extra": sum(1 for key in logged if key not in reference),
    }
    return figures, missing


def _print_first_divergences(
    expected: Mapping[str, list[AuditEvent]],
    logged: Mapping[tuple[str, int], list[AuditEvent]],
    missing: list[tuple[str, int]],
    chains: int = 3,
) -> None:
    """Where each of the first chains with a loss first parts from the reference: the
    reference's event there and what the log holds, with the inputs that made them."""

    def brief(event: AuditEvent) -> str:
        attributes = {k: v for k, v in event.attributes.items() if k != "source"}
        return (
            f"{event.type.value} at {event.occurred_at} from {event.attributes.get('source')}"
            f" {str(attributes)[:300]}"
        )

    first: dict[str, int] = {}
    for connector_id, sequence in missing:
        first[connector_id] = min(sequence, first.get(connector_id, sequence))
    for connector_id, sequence in sorted(first.items())[:chains]:
        wanted = next(e for e in expected[connector_id] if e.sequence == sequence)
        print(f"{connector_id} parts at sequence {sequence}:")
        print("  reference:", brief(wanted))
        held = logged.get((connector_id, sequence), [])
        for event in held:
            print("  logged:   ", brief(event))
        if not held:
            print("  logged:    nothing")


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic}


def processed_inputs(ns: Namespace) -> dict[int, int]:
    """The offsets up to which a stopped worker processed the inputs topic, per partition
    (its consumer group commits what it processed when it stops)."""
    inputs = f"{ns.app_id}-inputs"
    result: dict[int, int] = run(_committed(ns.bootstrap, ns.app_id, inputs))
    return result


def routed(ns: Namespace) -> int:
    """How many records of the health topic the worker's router has committed: how far the
    worker is through a backlog (the router commits once its batches are forwarded)."""
    committed = run(_committed(ns.bootstrap, f"{ns.app_id}-router", ns.topics.health))
    return sum(committed.values())


def false_pages(ns: Namespace, failed: set[str]) -> dict[str, Any]:
    """Pages for connectors that never failed (not in `failed`): their audit events (a
    healthy, pinging connector has none: no `failure.detected`, no incident) and the
    notification requests naming them. Counts, the first few connectors, and how many
    outages (groups of failed connectors, with audit chains of their own) formed."""
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    # An outage's own chain (docs/outages.md) is of the connectors that failed together.
    paged = sorted(
        {e.connector_id for e in events if e.connector_id not in failed}
        - {e.connector_id for e in events if is_outage_key(e.connector_id)}
    )
    codec = registry().codec("NotificationRequest")
    notified = sorted(
        {
            str(connector)
            for r in read_records(ns.bootstrap, ns.topics.notifications, timeout_s=5)
            if (connector := codec.decode(r.value)["connector_id"]) not in failed
        }
    )
    return {
        "outages": len({e.connector_id for e in events if is_outage_key(e.connector_id)}),
        "false_pages": len(paged),
        "false_notifications": len(notified),
        "paged_first": paged[:5] + notified[:5],
    }
