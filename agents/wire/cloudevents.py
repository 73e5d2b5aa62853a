"""CloudEvents 1.0 headers (Kafka protocol binding, binary content mode) for the records the
worker writes: audit events, recovery requests and notification requests.

The Avro body stays the record exactly as before; the CloudEvents attributes travel as
`ce_*` headers beside it, so a consumer can route on `ce_type` / `ce_subject` without
decoding Avro. The Kafka key stays the connector id. Documented in schemas/README.md.
"""

from __future__ import annotations

from streams.models import AuditEvent, NotificationRequest, RecoveryRequest
from streams.timefmt import iso_from_ms

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"
# Commands are not audit events, so they get types of their own in the same naming family.
RECOVERY_REQUESTED = "connector.recovery.requested"
NOTIFICATION_REQUESTED = "notification.requested"

Headers = list[tuple[str, bytes]]
WireRecord = AuditEvent | RecoveryRequest | NotificationRequest


def default_source(app_id: str) -> str:
    """The `ce_source` of a deployment that configured none: its app id as a URN."""
    return f"urn:connector-recovery:{app_id}"


def dataschema(fingerprint: bytes) -> str:
    """A URI naming a schema by its CRC-64-AVRO fingerprint, the same 8 bytes (in hex, as
    they appear on the wire) that follow `C3 01` in the body."""
    return f"urn:avro:crc-64-avro:{fingerprint.hex()}"


def _attributes(record: WireRecord) -> tuple[str, str, int]:
    """(id, type, time) of a record."""
    if isinstance(record, AuditEvent):
        return record.event_id, record.type.value, record.occurred_at
    if isinstance(record, RecoveryRequest):
        return record.request_id, RECOVERY_REQUESTED, record.requested_at
    return record.dedup_key, NOTIFICATION_REQUESTED, record.occurred_at


def headers(record: WireRecord, source: str, fingerprint: bytes) -> Headers:
    """The binary-mode CloudEvents headers of `record`, whose body is written with the
    schema of `fingerprint`."""
    event_id, event_type, occurred_at = _attributes(record)
    return [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type.encode()),
        ("ce_time", iso_from_ms(occurred_at).encode()),
        ("ce_subject", record.connector_id.encode()),
        ("ce_dataschema", dataschema(fingerprint).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
