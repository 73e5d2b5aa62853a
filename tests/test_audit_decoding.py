"""Decoded audit records become events without pydantic's per-field pass where Avro already
vouches for the types (`agents.wire.records.audit_event`), and with it everywhere else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from agents.audit import log as auditlog
from agents.wire.records import audit_event, audit_record
from schemas import SCHEMA_DIR
from streams.chain import event_hash
from streams.models import AuditEvent
from tests.test_auditlog import as_read, fleet_log


def test_a_decoded_record_becomes_the_same_event_as_by_validation() -> None:
    for event in fleet_log():
        record = audit_record(event)
        built = audit_event(dict(record))
        validated = AuditEvent.model_validate(record)
        assert built == validated == event
        assert type(built.type) is type(validated.type)
        assert type(built.mode) is type(validated.mode)
        assert built.model_dump() == validated.model_dump()
        assert audit_record(built) == record  # what `export` writes
        assert event_hash(built) == event.hash
        changed = built.model_copy(update={"actor": "mallory"})
        assert (changed.actor, built.actor) == ("mallory", event.actor)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "connector.exploded"),
        ("mode", "SOMETIMES"),
        ("connector_id", ""),
        ("connector_id", "x" * 250),
        ("sequence", 0),
    ],
)
def test_what_avro_cannot_vouch_for_is_still_rejected(field: str, value: Any) -> None:
    record = {**audit_record(fleet_log()[0]), field: value}
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(record)
    with pytest.raises(ValidationError):
        audit_event(record)


def test_an_archive_of_another_schema_is_validated_field_by_field(tmp_path: Path) -> None:
    """A file that declares a schema of its own is not trusted to hold the current one's
    types: here an extra field, which the model forbids, makes each record undecodable."""
    schema = json.loads((SCHEMA_DIR / "audit_event.avsc").read_text())
    schema["fields"].append({"name": "note", "type": "string", "default": ""})
    events = fleet_log()[:3]
    forged = tmp_path / "forged.avro"
    with forged.open("wb") as handle:
        records = [{**audit_record(e), "note": "hello"} for e in events]
        fastavro.writer(handle, fastavro.parse_schema(schema), records)
    read = auditlog.read_archive(forged)
    assert list(read.events) == []
    assert [f.kind for f in read.findings] == ["undecodable"] * len(events)

    current = tmp_path / "current.avro"
    auditlog.export(as_read(events), current)
    assert [e for _, e in auditlog.read_archive(current).events] == events
