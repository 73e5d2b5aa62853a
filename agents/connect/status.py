"""Kafka Connect status JSON → health verdicts. Pure: no I/O, the clock comes in as `now_ms`.

One entry of `GET /connectors?expand=status&expand=info` becomes one verdict for the
connector (the probe turns it into a `HealthPing`). The rules, in order (docs/kafka-connect.md):

1. The connector or any task is `FAILED` → UNHEALTHY. `failure` is the first failed unit's
   exception: its class's short name and the first line of its message. `retryable` is false
   when a trace of a failed unit names a configuration or deployment error (see
   `NOT_RETRYABLE`): restarting cannot fix those, so the incident opens at once.
2. A unit is `RESTARTING` or `UNASSIGNED` (a restart or a rebalance in flight): the previous
   verdict is repeated, so a restart of a failed task does not read as a recovery and a
   rebalance does not read as a failure. A connector in transition for longer than the grace
   period is UNHEALTHY (`Unassigned: ...`, retryable). Without a previous verdict (a connector
   just created) nothing is reported until it settles or the grace period ends.
3. The connector is `PAUSED` or `STOPPED`: operator intent, never a failure. The previous
   verdict is repeated (HEALTHY when there is none): pausing does not hide an open failure,
   and it does not raise one.
4. Otherwise (connector and tasks `RUNNING`) → HEALTHY.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from streams.models import HealthStatus

# A trace naming one of these classes (on its first line or a "Caused by:" line) is not
# retryable: a wrong setting, a missing plugin or missing credentials/ACLs stay wrong
# however often the task restarts.
NOT_RETRYABLE = re.compile(
    r"(?:^|Caused by: )(?:[\w$]+\.)*"
    r"(\w*ConfigException|ClassNotFoundException|NoClassDefFoundError"
    r"|\w*AuthorizationException|\w*AuthenticationException)\b",
    re.MULTILINE,
)
_EXCEPTION_LINE = re.compile(r"^((?:[\w$]+\.)*([\w$]+))(?::\s*(.*))?$")
TRANSITIONAL = ("RESTARTING", "UNASSIGNED")
OPERATOR_STOPPED = ("PAUSED", "STOPPED")
FAILURE_MAX_CHARS = 300


@dataclass(frozen=True)
class Verdict:
    status: HealthStatus
    failure: str | None = None
    retryable: bool = True
    message: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status is HealthStatus.HEALTHY


@dataclass(frozen=True)
class Memory:
    """What the probe remembers of one connector between checks."""

    settled: Verdict | None = None
    # since when the connector has been in transition (RESTARTING/UNASSIGNED), if it is
    transitional_since_ms: int | None = None


@dataclass(frozen=True)
class Assessment:
    connector_id: str
    tenant_id: str | None
    # None: nothing to report at this check (a new connector still being assigned)
    verdict: Verdict | None
    memory: Memory
    connector_type: str | None = None


def failure_of(trace: str | None) -> tuple[str, bool]:
    """`(failure, retryable)` from a Java stack trace as Connect reports it."""
    if not trace or not trace.strip():
        return "unknown: no trace reported", True
    first = trace.strip().splitlines()[0].strip()
    match = _EXCEPTION_LINE.match(first)
    if match:
        short, message = match.group(2), (match.group(3) or "").strip()
        failure = f"{short}: {message}" if message else short
    else:
        failure = first
    return failure[:FAILURE_MAX_CHARS], NOT_RETRYABLE.search(trace) is None


def _units(status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    connector = status.get("connector") or {}
    tasks = sorted(status.get("tasks") or [], key=lambda task: int(task.get("id", 0)))
    return [("connector", connector)] + [(f"task {task.get('id')}", task) for task in tasks]


def assess(
    name: str,
    entry: dict[str, Any],
    previous: Memory | None,
    now_ms: int,
    *,
    grace_ms: int,
    tenant_key: str = "tenant",
) -> Assessment:
    """The verdict for one connector entry of `GET /connectors?expand=status&expand=info`."""
    previous = previous or Memory()
    status = entry.get("status") or {}
    config = (entry.get("info") or {}).get("config") or {}
    tenant = config.get(tenant_key)
    tenant_id = str(tenant) if tenant not in (None, "") else None
    connector_type = status.get("type") or (entry.get("info") or {}).get("type")

    def settle(verdict: Verdict) -> Assessment:
        return Assessment(name, tenant_id, verdict, Memory(settled=verdict), connector_type)

    def carry(verdict: Verdict | None, memory: Memory, note: str) -> Assessment:
        if verdict is None:
            return Assessment(name, tenant_id, None, memory, connector_type)
        return Assessment(name, tenant_id, replace(verdict, message=note), memory, connector_type)

    units = _units(status)
    failed = [(label, unit) for label, unit in units if unit.get("state") == "FAILED"]
    if failed:
        _, unit = failed[0]
        failure, _ = failure_of(unit.get("trace"))
        retryable = all(failure_of(u.get("trace"))[1] for _, u in failed)
        where = ", ".join(f"{lbl} on {u.get('worker_id', '?')}" for lbl, u in failed)
        return settle(Verdict(HealthStatus.UNHEALTHY, failure, retryable, f"FAILED: {where}"))

    moving = [(label, unit["state"]) for label, unit in units if unit.get("state") in TRANSITIONAL]
    if moving:
        since = previous.transitional_since_ms
        since = now_ms if since is None else since
        memory = Memory(settled=previous.settled, transitional_since_ms=since)
        what = ", ".join(f"{label} {state}" for label, state in moving)
        if now_ms - since >= grace_ms:
            failure = f"Unassigned: {what} for {(now_ms - since) // 1000} s"
            verdict = Verdict(HealthStatus.UNHEALTHY, failure, True, what)
            return Assessment(name, tenant_id, verdict, memory, connector_type)
        return carry(previous.settled, memory, f"{what} (previous verdict kept)")

    state = (status.get("connector") or {}).get("state")
    if state in OPERATOR_STOPPED:
        kept = previous.settled or Verdict(HealthStatus.HEALTHY)
        return carry(kept, Memory(settled=kept), f"{state} by an operator")
    return settle(Verdict(HealthStatus.HEALTHY, message=state))


def gone(previous: set[str], current: set[str]) -> list[str]:
    """Connectors the probe watched that Connect no longer lists (deleted)."""
    return sorted(previous - current)
