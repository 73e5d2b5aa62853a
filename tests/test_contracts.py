"""Wire contracts: every model round-trips through its .avsc, fingerprints are distinct, and
every kept schema version can be read by the current one (BACKWARD_TRANSITIVE, checked with
Avro's own checker from the `avro` package)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import avro.compatibility
import avro.schema
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.testing.driver import T0, Driver
from agents.wire.codec import AvroCodecError, SchemaRegistry, crc64_avro, registry
from agents.wire.records import BATCH_SLOTS, BadInput, decode_input, unpack
from agents.worker.statecodec import dump_state, load_state
from schemas import HISTORY_DIR, SCHEMA_DIR
from streams.models import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    AdminAction,
    AdminCommand,
    AuditEvent,
    EventType,
    HealthPing,
    HealthStatus,
    MemberChange,
    NotificationRequest,
    NotificationResult,
    OutageNotice,
    OutageSignal,
    RecoveryMode,
    RecoveryRequest,
    RecoveryResult,
    Tick,
    Watch,
)

SAMPLES: dict[str, Any] = {
    "HealthPing": HealthPing(
        connector_id="SAP-AR",
        tenant_id="acme",
        status=HealthStatus.UNHEALTHY,
        failure="timeout",
        retryable=False,
        checked_at=T0,
        latency_ms=1200,
        message="read timed out",
        position="lsn:0/16B3748",
    ),
    "Tick": Tick(connector_id="SAP-AR", now=T0),
    "Watch": Watch(connector_id="SAP-AR", tenant_id=None, at=T0),
    "AdminCommand": AdminCommand(
        command_id="c-1",
        action=AdminAction.SILENCE,
        connector_id="SAP-AR",
        incident_id="SAP-AR:3",
        actor="alice",
        reason="maintenance",
        until=T0 + 1,
        issued_at=T0,
    ),
    "RecoveryResult": RecoveryResult(
        request_id="SAP-AR:2",
        connector_id="SAP-AR",
        incident_id="SAP-AR:1",
        attempt=1,
        ok=False,
        detail="HTTP 500",
        finished_at=T0,
    ),
    "NotificationResult": NotificationResult(
        dedup_key="k",
        connector_id="SAP-AR",
        incident_id="SAP-AR:1",
        target="tenant:acme",
        level=-1,
        delivered=True,
        finished_at=T0,
    ),
    "OutageSignal": OutageSignal(
        connector_id="outage:dependency:sap-prod",
        group="dependency:sap-prod",
        member_id="SAP-AR",
        incident_id="SAP-AR:1",
        change=MemberChange.FAILED,
        tenant_id="acme",
        failure="timeout",
        at=T0,
    ),
    "OutageNotice": OutageNotice(
        connector_id="SAP-AR",
        outage_id="outage:dependency:sap-prod:1",
        group="dependency:sap-prod",
        incident_id="SAP-AR:1",
        at=T0,
    ),
    "RecoveryRequest": RecoveryRequest(
        request_id="SAP-AR:2",
        connector_id="SAP-AR",
        tenant_id="acme",
        incident_id="SAP-AR:1",
        attempt=1,
        mode=RecoveryMode.AUTO,
        actor=None,
        requested_at=T0,
        deadline=T0 + 30_000,
    ),
    "NotificationRequest": NotificationRequest(
        dedup_key="SAP-AR:1:failure_detected:tenant:acme",
        notification_kind="failure_detected",
        target="tenant:acme",
        level=-1,
        connector_id="SAP-AR",
        tenant_id="acme",
        incident_id="SAP-AR:1",
        failure="timeout",
        cause_event_id="SAP-AR:1",
        occurred_at=T0,
        summary="Connector SAP-AR failed (timeout)",
    ),
}


def _audit_sample() -> AuditEvent:
    d = Driver()
    d.ping(False)
    return d.events[0]


@pytest.mark.parametrize("name", [*SAMPLES, "AuditEvent"])
def test_every_model_round_trips_through_its_schema(name: str) -> None:
    model = _audit_sample() if name == "AuditEvent" else SAMPLES[name]
    codec = registry().codec(name)
    data = codec.encode(model.model_dump(mode="json"))
    assert data[:2] == b"\xc3\x01"
    assert type(model).model_validate(codec.decode(data)) == model


def test_models_and_schemas_have_the_same_fields() -> None:
    for name, model in [*SAMPLES.items(), ("AuditEvent", _audit_sample())]:
        schema = registry().current[name].document
        assert [f["name"] for f in schema["fields"]] == list(type(model).model_fields), name


def test_every_schema_file_has_its_own_fingerprint() -> None:
    reg = registry()
    assert len(reg.by_fingerprint) == len(reg.versions) >= 10


def test_a_new_version_that_only_changes_defaults_is_refused(tmp_path: Path) -> None:
    current = tmp_path / "current"
    history = tmp_path / "history"
    current.mkdir()
    history.mkdir()
    document = json.loads((SCHEMA_DIR / "health_ping.avsc").read_text())
    (current / "health_ping.avsc").write_text(json.dumps(document))
    document["doc"] = "only the doc changed: Parsing Canonical Form drops it"
    (history / "health_ping.v0.avsc").write_text(json.dumps(document))
    with pytest.raises(AvroCodecError, match="share fingerprint"):
        SchemaRegistry(current, history)


def test_fingerprint_is_the_avro_specs_crc64() -> None:
    for version in registry().versions:
        canonical = fastavro.schema.to_parsing_canonical_form(version.document)
        assert version.fingerprint.hex() == fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    assert crc64_avro(b"") == 0xC15D213AA4D7A795


def test_current_schemas_read_every_kept_version_backward_transitive() -> None:
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro has no annotations
    current = {p.name: avro.schema.parse(p.read_text()) for p in SCHEMA_DIR.glob("*.avsc")}
    kept = sorted(HISTORY_DIR.glob("*.avsc"))
    assert kept, "the history holds at least the first HealthPing"
    for old in kept:
        base = old.name.split(".v")[0] + ".avsc"
        result = checker.get_compatibility(current[base], avro.schema.parse(old.read_text()))
        assert result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible, (
            old.name,
            result.messages,
        )


def test_the_compatibility_check_can_fail() -> None:
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro has no annotations
    old = avro.schema.parse((HISTORY_DIR / "health_ping.v1.avsc").read_text())
    document = json.loads((SCHEMA_DIR / "health_ping.avsc").read_text())
    document["fields"].append({"name": "required_without_default", "type": "string"})
    newer = avro.schema.parse(json.dumps(document))
    result = checker.get_compatibility(newer, old)
    assert result.compatibility is avro.compatibility.SchemaCompatibilityType.incompatible


def test_a_v1_ping_decodes_with_the_current_schema() -> None:
    v1 = json.loads((HISTORY_DIR / "health_ping.v1.avsc").read_text())
    reg = registry()
    writer = next(v for v in reg.versions if v.path.name == "health_ping.v1.avsc")

    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(v1),
        {
            "connector_id": "SAP-AR",
            "tenant_id": None,
            "status": "HEALTHY",
            "failure": None,
            "retryable": True,
            "checked_at": T0,
        },
    )
    ping = decode_input(reg, b"\xc3\x01" + writer.fingerprint + body.getvalue())
    assert isinstance(ping, HealthPing)
    assert ping.position is None
    assert ping.checked_at == T0


def test_a_v2_ping_decodes_with_the_current_schema_without_a_dependency() -> None:
    """Producers not yet upgraded write version 2 (no `dependency`): read as null."""
    reg = registry()
    writer = next(v for v in reg.versions if v.path.name == "health_ping.v2.avsc")
    record = SAMPLES["HealthPing"].model_dump(mode="json", exclude={"dependency"})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer.parsed, record)
    ping = decode_input(reg, b"\xc3\x01" + writer.fingerprint + body.getvalue())
    assert isinstance(ping, HealthPing)
    assert ping.dependency is None
    assert ping.position == "lsn:0/16B3748"


def test_a_ping_names_its_dependency() -> None:
    ping = SAMPLES["HealthPing"].model_copy(update={"dependency": "sap-prod"})
    data = registry().codec("HealthPing").encode(ping.model_dump(mode="json"))
    assert decode_input(registry(), data).dependency == "sap-prod"  # type: ignore[union-attr]  # a ping


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_the_codec_never_crashes_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(BadInput):
        decode_input(registry(), data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 80), st.integers(0, 255))
def test_a_corrupted_ping_is_rejected_or_still_valid(index: int, byte: int) -> None:
    data = bytearray(
        registry().codec("HealthPing").encode(SAMPLES["HealthPing"].model_dump(mode="json"))
    )
    if index < len(data):
        data[index] = byte
    try:
        ping = decode_input(registry(), bytes(data))
    except BadInput:
        return
    assert isinstance(ping, HealthPing)


def test_state_table_format_round_trips() -> None:
    d = Driver.with_policy({"defaults": {"max_retries": 0}})
    d.ping(False, position="p1")
    d.deliver_pending()
    # The last ping time goes with a write (a bound for late pings after a restart); the
    # heartbeat deadline does not (a new owner's grace sets it).
    without_deadline = d.state._replace(heartbeat_deadline=None)
    assert load_state(dump_state(d.state, 41)) == (without_deadline, 41)
    assert d.state.last_checked_at is not None
    assert d.state.heartbeat_deadline is not None
    written_before = json.loads(dump_state(d.state, 41))[:4]  # the envelope without it
    assert load_state(json.dumps(written_before).encode()) == (
        without_deadline._replace(last_checked_at=None),
        41,
    )
    assert d.state.record.notified
    assert EventType.INCIDENT_OPENED in {e.type for e in d.events}


def test_a_state_written_before_the_outage_fields_loads_with_their_defaults() -> None:
    """The tables of previous versions: records without `outage_group`, `outage_id`,
    `notify_at` and `restarts_held`, detector memory without `dependency` (all appended
    last)."""
    d = Driver()
    d.ping(False)
    envelope = json.loads(dump_state(d.state, 7))
    assert envelope[1][-4] is not None  # the group of the open episode
    del envelope[1][-4:]
    envelope[2].pop()
    state, applied = load_state(json.dumps(envelope).encode())
    assert applied == 7
    assert state.record == d.state.record._replace(outage_group=None)
    assert state.memory.dependency is None


def test_the_documented_canonical_bytes_recompute_every_hash() -> None:
    """schemas/README.md's recipe, standard library only, as an auditor would run it."""
    import hashlib  # noqa: PLC0415 - the recipe stands alone, standard library only, as an auditor runs it
    import json as stdlib_json  # noqa: PLC0415 - as above

    d = Driver.with_policy({"defaults": {"max_retries": 1, "attempt_timeout_s": 5}})
    d.ping(False, position='ü-ß "quoted"\n')
    d.run_for(60)
    d.ping(True)
    assert len(d.events) > 4
    prev = "0" * 64
    for event in d.events:
        record = (
            registry()
            .codec("AuditEvent")
            .decode(registry().codec("AuditEvent").encode(event.model_dump(mode="json")))
        )
        body = {k: v for k, v in record.items() if k != "hash"}
        canonical = stdlib_json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert record["prev_hash"] == prev
        digest = hashlib.sha256(prev.encode("ascii") + canonical.encode()).hexdigest()
        assert digest == record["hash"]
        prev = digest


def test_an_input_batch_unpacks_in_order_with_positions_and_sources() -> None:
    reg = registry()
    pings = [
        reg.codec("HealthPing").encode(SAMPLES["HealthPing"].model_dump(mode="json"))
        for _ in range(3)
    ]
    batch = reg.codec("InputBatch").encode(
        {"items": [pings[0], b"garbage", pings[1]], "sources": ["h/0/7", "h/0/8", "h/1/2"]}
    )
    items = unpack(reg, batch, "in", 2, 5)
    assert [i.position for i in items] == [5 * BATCH_SLOTS + n for n in range(3)]
    assert [i.source for i in items] == ["in/2/5#0", "in/2/5#1", "in/2/5#2"]
    assert [i.origin for i in items] == ["h/0/7", "h/0/8", "h/1/2"]
    assert items[0].message == SAMPLES["HealthPing"]
    assert items[1].message is None
    assert items[1].problem
    single = unpack(reg, pings[2], "in", 2, 6)
    assert [(i.position, i.source, i.origin) for i in single] == [(6 * BATCH_SLOTS, "in/2/6", None)]


pings = st.fixed_dictionaries(
    {
        "connector_id": st.text(min_size=1, max_size=12).filter(str.strip),
        "tenant_id": st.none() | st.text(max_size=8),
        "status": st.sampled_from(["HEALTHY", "UNHEALTHY"]),
        "failure": st.none() | st.text(max_size=8),
        "retryable": st.booleans(),
        "checked_at": st.integers(1_700_000_000_000, 2_000_000_000_000),
        "latency_ms": st.none() | st.integers(0, 10**6),
        "message": st.none() | st.text(max_size=8),
        "position": st.none() | st.text(max_size=8),
        "dependency": st.none() | st.text(max_size=8),
    }
)


@settings(max_examples=200)
@given(pings)
def test_a_forwarded_ping_decodes_as_a_validated_one(record: dict[str, Any]) -> None:
    """The decider builds router-validated pings without validating again
    (agents/wire/records.py `_validated_ping`): the same model, field for field."""
    data = registry().codec("HealthPing").encode(record)
    validated = decode_input(registry(), data)
    forwarded = decode_input(registry(), data, validated=True)
    assert forwarded == validated
    assert forwarded.model_dump() == validated.model_dump()
    assert forwarded.model_fields_set == validated.model_fields_set
    assert type(forwarded.status) is type(validated.status)  # type: ignore[union-attr]  # both are pings
    assert hash(forwarded) == hash(validated)


any_pings = st.fixed_dictionaries(
    {
        "connector_id": st.text(max_size=3)
        | st.text(alphabet=" \t\n\u3000\u2028x", max_size=6)
        | st.text(min_size=247, max_size=252)
        | st.sampled_from(["outage:x", "outage", "x-outage:"]),
        "tenant_id": st.none() | st.text(max_size=8),
        "status": st.sampled_from(["HEALTHY", "UNHEALTHY"]),
        "failure": st.none() | st.text(max_size=8),
        "retryable": st.booleans(),
        "checked_at": st.sampled_from([MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS]).flatmap(
            lambda edge: st.integers(edge - 2, edge + 2)
        )
        | st.integers(-(2**63), 2**63 - 1),
        "latency_ms": st.none() | st.integers(-(2**63), 2**63 - 1),
        "message": st.none() | st.text(max_size=8),
        "position": st.none() | st.text(max_size=8),
        "dependency": st.none() | st.text(max_size=8),
    }
)


@settings(max_examples=500, deadline=None)
@given(any_pings)
def test_a_ping_is_judged_as_pydantic_judges_it(record: dict[str, Any]) -> None:
    """The router checks pings without pydantic where Avro vouches for the types
    (agents/wire/records.py `_valid_ping`): the same model, or the same error, as
    `model_validate`."""
    data = registry().codec("HealthPing").encode(record)
    try:
        expected = HealthPing.model_validate(dict(record))
    except ValidationError:
        with pytest.raises(BadInput, match=r"^invalid HealthPing: "):
            decode_input(registry(), data)
        return
    got = decode_input(registry(), data)
    assert got == expected
    assert got.model_dump() == expected.model_dump()
    assert got.model_fields_set == expected.model_fields_set
