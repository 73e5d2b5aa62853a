"""The inputs behind `tests/data/pre_typed_evidence.avro`, an archive exported by the code
as it was before the attribute map got typed views (issue 15), and the replay whose result
is frozen beside it in `tests/data/pre_typed_evidence.expected.json`.

The scenario touches every event type and every attribute key the decider writes: retries
with backoff, an accepted action, a timed-out attempt, a non-retryable failure with a failed
tenant notification and its escalation, acknowledgement, a manual attempt that fails,
manual resolution, flapping with hysteresis, exhausted retries with timed escalation,
silence, a missed heartbeat, retirement, rejected commands, and a connector left waiting for
an attempt (a `deadline_missed` finding).

`python -m tests.old_archive DIRECTORY` writes the archive, its manifest and the expected
replay. Run it only to make a new fixture from code known to be right: the committed files
are the evidence that old logs still replay.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

from agents.audit import log as auditlog
from agents.audit import report
from agents.audit.log import LogRead, Scope
from agents.testing.driver import Driver
from streams.models import AdminAction, AuditEvent
from streams.state import Record

ARCHIVE_NAME = "pre_typed_evidence.avro"
EXPECTED_NAME = "pre_typed_evidence.expected.json"
ESCALATION = [
    {"after_s": 900, "target": {"webhook": "https://hooks.example/secondary"}},
    {"after_s": 1800, "target": {"webhook": "https://hooks.example/manager"}},
]


def _retries_then_recovery() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 3, "attempt_timeout_s": 5, "backoff": {"cap_s": 4}}},
        connector_id="SAP-AR",
        tenant_id="acme",
    )
    d.ping(True, position="lsn-1")
    d.advance(1)
    d.ping(False, failure="timeout", position="lsn-2")
    d.deliver_pending()
    d.run_for(5)
    d.recovery_result(ok=True, detail="restart accepted")
    d.run_for(12)  # the first attempt times out; the second starts
    d.advance(1)
    d.ping(True, position="lsn-9")
    d.deliver_pending()
    return d


def _manual_recovery() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 2}, "admins": ["alice"]},
        connector_id="SFDC-SYNC",
        tenant_id="globex",
    )
    d.ping(True)
    d.advance(2)
    d.ping(False, failure="auth", retryable=False)
    d.deliver_pending(fail_targets=frozenset({"tenant:globex"}))
    d.deliver_pending()
    d.advance(30)
    d.admin(AdminAction.ACKNOWLEDGE, incident=d.state.record.incident_id)
    d.admin(AdminAction.ACKNOWLEDGE, incident=d.state.record.incident_id)  # rejected
    d.admin(AdminAction.RECOVER, actor="mallory")  # rejected: not an admin
    d.admin(AdminAction.RECOVER, reason="rotated the credentials")
    d.advance(3)
    d.recovery_result(ok=False, detail="HTTP 500")
    d.advance(60)
    d.admin(AdminAction.RESOLVE, incident=d.state.record.incident_id, reason="fixed upstream")
    d.deliver_pending()
    return d


def _flapping() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 2, "backoff": {"base_s": 1, "cap_s": 2}}},
        connector_id="KAFKA-MIRROR",
        tenant_id="acme",
    )
    for i in range(12):
        d.ping(i % 2 == 1)
        d.advance(1)
    d.deliver_pending()
    for _ in range(30):
        d.ping(False, failure="broker_unreachable")
        d.advance(1)
    d.run_for(40)
    d.ping(True)
    d.deliver_pending()
    return d


def _escalation() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 0}, "escalation": ESCALATION},
        connector_id="PLATFORM-DNS",
        tenant_id=None,
    )
    d.ping(False, failure="nxdomain")
    d.deliver_pending()
    d.run_for(901, step=60)
    d.deliver_pending(fail_targets=frozenset({"escalation:1"}))
    d.run_for(60, step=30)
    d.ping(True)
    d.deliver_pending()
    return d


def _silenced_then_retired() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 0, "heartbeat_timeout_s": 30}},
        connector_id="LEGACY-FTP",
        tenant_id="initech",
    )
    d.ping(True)
    d.admin(AdminAction.SILENCE, until=d.now + 600_000, reason="maintenance window")
    d.admin(AdminAction.SILENCE, until=d.now - 1)  # rejected: in the past
    d.run_for(45, step=5)  # the heartbeat is missed while silenced
    d.advance(700)
    d.ping(True)
    d.deliver_pending()
    d.advance(10)
    d.ping(False, failure="disk_full", retryable=False)
    d.deliver_pending()
    d.admin(AdminAction.RETIRE, reason="decommissioned")
    d.advance(1)
    d.ping(False)
    d.admin(AdminAction.RECOVER)  # rejected: retired
    return d


def _left_waiting() -> Driver:
    d = Driver.with_policy(
        {"defaults": {"max_retries": 5, "backoff": {"base_s": 30, "cap_s": 60}}},
        connector_id="S3-EXPORT",
        tenant_id="globex",
    )
    d.watch()
    d.ping(False, failure="throttled")
    d.deliver_pending()
    return d  # no tick follows: the scheduled attempt is never started


def scenario() -> list[AuditEvent]:
    """The connectors' events one chain after another, as an export of a log would hold
    them after a consumer read partition by partition."""
    events: list[AuditEvent] = []
    for build in (
        _left_waiting,
        _retries_then_recovery,
        _manual_recovery,
        _flapping,
        _escalation,
        _silenced_then_retired,
    ):
        events.extend(build().events)
    return events


def _plain(value: object) -> object:
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def _record_json(record: Record) -> dict[str, object]:
    return {name: _plain(value) for name, value in record._asdict().items()}


def replay(read: LogRead) -> dict[str, Any]:
    """Everything an auditor gets from the archive: the report, the states of record, the
    verification, time travel at two points, and one tenant's scoped report."""
    built = report.build(read, Scope())
    built["source"] = "archive"  # the path it was read from is not evidence
    projection, findings, _ = report.fold_scope(read, Scope())
    times = sorted(event.occurred_at for _, event in read.events)
    scoped = report.build(read, Scope(tenant="globex"))
    scoped["source"] = "archive"
    return {
        "report": built,
        "records": {cid: _record_json(r) for cid, r in sorted(projection.records.items())},
        "findings": [f.as_dict() for f in findings],
        "as_of": [report.state_as_of(read, Scope(), times[len(times) // k]) for k in (2, 4)],
        "tenant_globex": scoped,
    }


def write_fixture(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / ARCHIVE_NAME
    events = scenario()
    auditlog.export(LogRead("scenario", [(f"#{i}", e) for i, e in enumerate(events)]), archive)
    expected = replay(auditlog.read_archive(archive))
    (directory / EXPECTED_NAME).write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]))
