"""One health ping through a real worker on a real broker, into the audit topic."""

from __future__ import annotations

import io

import fastavro
import pytest

from schemas import SCHEMA_DIR
from tests.kafka.harness import Namespace, read_records, wait_for_audit

pytestmark = pytest.mark.kafka


@pytest.mark.usefixtures("worker")
def test_unhealthy_ping_becomes_a_failure_detected_audit_event(ns: Namespace) -> None:
    published = ns.cli(
        "publish",
        "--connector",
        "SAP-AR",
        "--status",
        "unhealthy",
        "--failure",
        "timeout",
        "--tenant",
        "acme",
        "--position",
        "lsn-42",
    )
    assert published.returncode == 0, published.stderr
    events = wait_for_audit(ns, lambda ev: len(ev) >= 1, 30, "the detection on the audit topic")
    detected = events[0]
    assert detected.type.value == "connector.failure.detected"
    assert (detected.connector_id, detected.tenant_id, detected.failure) == (
        "SAP-AR",
        "acme",
        "timeout",
    )
    assert detected.sequence == 1
    assert detected.event_id == "SAP-AR:1"
    assert detected.attributes["position"] == "lsn-42"

    # A plain consumer decodes it with the .avsc alone: C3 01 | fingerprint | Avro body.
    (record,) = [r for r in read_records(ns.bootstrap, ns.topics.audit, 1) if r.key == b"SAP-AR"][
        :1
    ]
    assert record.value[:2] == b"\xc3\x01"
    schema = fastavro.schema.load_schema(str(SCHEMA_DIR / "audit_event.avsc"))
    expected_fp = fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(schema), "CRC-64-AVRO"
    )
    assert record.value[2:10].hex() == expected_fp
    body = fastavro.schemaless_reader(io.BytesIO(record.value[10:]), schema, None)
    assert isinstance(body, dict)
    assert body["type"] == "connector.failure.detected"
    assert body["hash"] == detected.hash


@pytest.mark.usefixtures("worker")
def test_healthy_ping_after_failure_completes_the_recovery(ns: Namespace) -> None:
    assert ns.cli("publish", "--connector", "CRM-1", "--status", "unhealthy").returncode == 0
    wait_for_audit(ns, lambda ev: len(ev) >= 1, 30, "the detection")
    assert ns.cli("publish", "--connector", "CRM-1", "--status", "healthy").returncode == 0
    events = wait_for_audit(
        ns,
        lambda ev: any(e.type.value == "connector.recovery.completed" for e in ev),
        30,
        "the recovery receipt",
    )
    completed = next(e for e in events if e.type.value == "connector.recovery.completed")
    assert completed.attributes["status"] == "recovered"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
