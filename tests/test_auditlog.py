"""Auditor tools on archives (no Kafka needed): export, verify with and without the
manifest, tamper detection, time travel, and tenant scope."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.audit import log as auditlog
from agents.audit import report
from agents.audit.log import LogRead, Scope
from agents.testing.driver import Driver
from streams.evolve import fold
from streams.models import AdminAction, AuditEvent, EventType
from streams.projections import Projection
from streams.state import Record

TENANTS = ("acme", "globex", None)


def fleet_log() -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for index, tenant in enumerate(TENANTS * 2):
        d = Driver.with_policy(
            {"defaults": {"max_retries": 1, "attempt_timeout_s": 5}},
            connector_id=f"C{index}-{tenant or 'platform'}",
            tenant_id=tenant,
        )
        d.now += index * 60_000
        d.ping(True)
        d.advance(1)
        d.ping(False)
        d.run_for(3 + index)
        d.ping(True)
        d.deliver_pending()
        if index == 4:
            d.advance(5)
            d.ping(False, failure="auth", retryable=False)
            d.deliver_pending()
            d.admin(AdminAction.ACKNOWLEDGE, incident=d.state.record.incident_id)
        events.extend(d.events)
    return events


def as_read(events: list[AuditEvent]) -> LogRead:
    return LogRead("test", [(f"#{i}", e) for i, e in enumerate(events)])


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    out = tmp_path / "audit.avro"
    auditlog.export(as_read(fleet_log()), out)
    return out


def kinds(findings: list[Any]) -> set[str]:
    """Finding kinds, from Finding objects or their JSON form."""
    return {f["kind"] if isinstance(f, dict) else f.kind for f in findings}


def test_an_archive_round_trips_and_verifies_clean(archive: Path) -> None:
    read = auditlog.read_archive(archive)
    assert [e for _, e in read.events] == fleet_log()
    assert auditlog.check_manifest(archive, read) == []
    built = report.build(read, Scope())
    assert built["verification"]["ok"]
    assert built["totals"]["failure_count"] == 7
    assert built["totals"]["open_incidents"] == 1
    manifest = json.loads(Path(str(archive) + ".manifest.json").read_text())
    assert manifest["count"] == len(list(read.events))
    assert set(manifest["chain_heads"]) == {e.connector_id for _, e in read.events}


def test_a_flipped_byte_is_found(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    read = auditlog.read_archive(archive)
    findings = read.findings + auditlog.check_manifest(archive, read)
    findings += report.fold_scope(read, Scope())[1]
    assert "archive_altered" in kinds(findings)
    assert kinds(findings) & {"undecodable", "hash_mismatch", "sequence_gap", "truncated"}


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("drop", "sequence_gap"),
        ("reorder", "out_of_order"),
        ("change_duplicate", "conflicting_duplicate"),
        ("edit", "hash_mismatch"),
        ("cut_tail", "truncated"),
    ],
)
def test_tampering_is_found_without_and_with_the_manifest(
    tmp_path: Path, archive: Path, tamper: str, expected: str
) -> None:
    events = [e for _, e in auditlog.read_archive(archive).events]
    victim = 5
    if tamper == "drop":
        del events[victim]
    elif tamper == "reorder":
        events[victim], events[victim + 1] = events[victim + 1], events[victim]
    elif tamper == "change_duplicate":
        changed = events[victim].model_copy(update={"actor": "mallory"})
        events.insert(victim + 2, changed)
    elif tamper == "edit":
        events[victim] = events[victim].model_copy(update={"occurred_at": 0})
    else:
        last = max(i for i, e in enumerate(events) if e.connector_id == events[0].connector_id)
        del events[last]
    forged = tmp_path / "forged.avro"
    auditlog.export(as_read(events), forged)
    shutil.copy(Path(str(archive) + ".manifest.json"), Path(str(forged) + ".manifest.json"))
    read = auditlog.read_archive(forged)
    with_manifest = report.build(read, Scope(), auditlog.check_manifest(forged, read))
    assert not with_manifest["verification"]["ok"]
    assert expected in kinds(with_manifest["verification"]["findings"])
    assert "archive_altered" in kinds(with_manifest["verification"]["findings"])
    if tamper != "cut_tail":  # a missing tail needs the manifest (or a checkpoint)
        alone = report.build(read, Scope())
        assert expected in kinds(alone["verification"]["findings"])


def test_an_identical_resend_is_benign_and_does_not_change_mttr(archive: Path) -> None:
    events = [e for _, e in auditlog.read_archive(archive).events]
    clean = report.build(as_read(events), Scope())
    resent = report.build(as_read([*events, events[3], events[7]]), Scope())
    assert resent["verification"]["ok"]
    assert kinds(resent["verification"]["findings"]) == {"benign_duplicate"}
    assert resent["totals"] == clean["totals"]


def test_time_travel_returns_the_fold_at_that_time() -> None:
    events = fleet_log()
    for cut in (events[3].occurred_at, events[10].occurred_at, events[-1].occurred_at):
        state = report.state_as_of(as_read(events), Scope(), cut)
        for connector, snapshot in state["connectors"].items():
            expected = fold(
                Record(connector),
                [e for e in events if e.connector_id == connector and e.occurred_at <= cut],
            )
            assert snapshot["phase"] == expected.phase.value
            assert snapshot["sequence"] == expected.sequence
            assert snapshot["incident_open"] == expected.incident_open


def test_report_formats_render(archive: Path) -> None:
    built = report.build(auditlog.read_archive(archive), Scope(tenant="acme"))
    assert set(built) >= {"scope", "totals", "connectors", "tenants", "incidents", "verification"}
    assert set(built["totals"]["mttr_seconds"]) == {"count", "mean", "p50", "p90", "p99"}
    receipts = [r for c in built["connectors"].values() for r in c["receipts"]]
    assert receipts
    assert all(r["status"] == "recovered" for r in receipts)
    assert "data-chart=" in report.render(built, "html")
    assert "| failures |" in report.render(built, "md")
    assert json.loads(report.render(built, "json")) == json.loads(json.dumps(built))


names = st.sampled_from(["acme", "globex", "initech", "umbrella"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(names, st.booleans(), st.integers(1, 20)), min_size=2, max_size=8), names)
def test_a_tenant_scope_shows_nothing_of_other_tenants(
    connectors: list[tuple[str, bool, int]], tenant: str
) -> None:
    events: list[AuditEvent] = []
    for index, (owner, recovers, seconds) in enumerate(connectors):
        d = Driver(connector_id=f"{owner}-feed-{index}", tenant_id=owner)
        d.now += index * 1000
        d.ping(False)
        d.run_for(seconds)
        if recovers:
            d.ping(True)
        d.deliver_pending()
        events.extend(d.events)
    built = report.build(as_read(events), Scope(tenant=tenant))
    others = {owner for owner, _, _ in connectors} - {tenant}
    for fmt in report.FORMATS:
        text = report.render(built, fmt)
        for other in others:
            assert other not in text, (fmt, other)
    mine = [e for e in events if e.tenant_id == tenant]
    assert built["events"] == len(mine)
    assert built["totals"]["failure_count"] == sum(
        1 for e in mine if e.type is EventType.FAILURE_DETECTED
    )


SEED_RECOVERY_LOG = {"connector_id", "failure", "retries", "status", "timestamp"}


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_the_yaml_recovery_log_is_every_receipt_of_the_json_report(
    archive: Path, tenant: str | None
) -> None:
    """`report --format yaml`: the seed's recovery log (its five keys, `retries` a number,
    `timestamp` a quoted string), one entry per receipt of the JSON report, with the
    incident, tenant and actor."""
    built = report.build(auditlog.read_archive(archive), Scope(tenant=tenant))
    from_json = json.loads(report.render(built, "json"))
    text = report.render(built, "yaml")
    entries = yaml.safe_load(text)
    assert isinstance(entries, list)
    assert entries
    receipts = [r for c in from_json["connectors"].values() for r in c["receipts"]]
    assert len(entries) == len(receipts)
    for entry in entries:
        assert list(entry)[:5] == ["connector_id", "failure", "retries", "status", "timestamp"]
        assert SEED_RECOVERY_LOG | {"incident_id", "tenant_id", "actor"} <= set(entry)
        assert isinstance(entry["retries"], int)
        assert isinstance(entry["timestamp"], str)
        assert entry["status"] == "recovered"
    as_wire = [
        {k: str(v) for k, v in e.items() if k not in ("incident_id", "tenant_id")} for e in entries
    ]
    key = "timestamp"
    assert sorted(as_wire, key=lambda r: (r[key], r["connector_id"])) == sorted(
        receipts, key=lambda r: (r[key], r["connector_id"])
    )
    incidents = {i["incident_id"]: i for i in from_json["incidents"]}
    for entry in entries:
        incident = incidents[entry["incident_id"]]
        assert entry["connector_id"] == incident["connector_id"]
        assert entry["tenant_id"] == incident["tenant_id"]
        assert entry["timestamp"] == incident["recovered_at"]
    if tenant is not None:
        assert {e["tenant_id"] for e in entries} == {tenant}


def test_a_period_without_recoveries_is_an_empty_yaml_list() -> None:
    built = report.build(as_read(fleet_log()), Scope(since_ms=4_000_000_000_000))
    assert yaml.safe_load(report.render(built, "yaml")) == []


@pytest.mark.parametrize("period", [(None, None), (0, None), (None, 1), (60_000, 240_000)])
def test_replay_figures_match_the_report_s_episodes(period: tuple[int | None, int | None]) -> None:
    """`replay` keeps its episodes as figures only (`streams.projections.Figures`): the same
    totals and per-tenant totals as the report's episodes, for any period."""
    events = fleet_log()
    start = events[0].occurred_at
    since, until = (None if offset is None else start + offset for offset in period)
    scope = Scope(since_ms=since, until_ms=until)
    replayed = report.build(as_read(events), scope, detail=False)
    reported = report.build(as_read(events), scope)
    assert replayed["totals"]["failure_count"] > 0 or period != (None, None)
    assert (replayed["totals"], replayed["tenants"]) == (reported["totals"], reported["tenants"])
    assert "connectors" not in replayed
    assert "incidents" not in replayed


def test_time_travel_lists_the_incidents_open_at_that_time() -> None:
    events = fleet_log()
    opened = {e.incident_id for e in events if e.type is EventType.INCIDENT_OPENED}
    resolved = {e.incident_id for e in events if e.type is EventType.INCIDENT_RESOLVED}
    assert opened - resolved  # the log has incidents still open
    assert opened & resolved  # and resolved ones
    for cut in sorted({e.occurred_at for e in events}):
        so_far = [e for e in events if e.occurred_at <= cut]
        projection = Projection().apply_all(so_far)
        expected = sorted(e.incident_id for e in projection.episodes.values() if e.incident_open)
        state = report.state_as_of(as_read(events), Scope(), cut)
        assert state["open_incidents"] == expected


def test_report_and_export_write_the_yaml_recovery_log(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agents import cli  # noqa: PLC0415 - the command line, as a user runs it

    scoped = ["--archive", str(archive), "--tenant", "acme", "--quiet"]
    assert cli.main(["report", "--format", "yaml", *scoped]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    out = tmp_path / "receipts.yaml"
    assert cli.main(["export", "--format", "yaml", "--out", str(out), *scoped]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert yaml.safe_load(out.read_text()) == printed
    built = report.build(auditlog.read_archive(archive), Scope(tenant="acme"))
    assert printed == report.recovery_receipts(built)
    assert printed
    assert {e["tenant_id"] for e in printed} == {"acme"}
