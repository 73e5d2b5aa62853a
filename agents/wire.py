"""Between the wire (Avro records as dicts) and the core's models."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agents.codec import AvroCodecError, SchemaRegistry
from streams.models import (
    AdminCommand,
    AuditEvent,
    DeciderInput,
    HealthPing,
    NotificationResult,
    RecoveryResult,
    Tick,
    Watch,
)

INPUT_MODELS: dict[str, type[DeciderInput]] = {
    "HealthPing": HealthPing,
    "Tick": Tick,
    "Watch": Watch,
    "AdminCommand": AdminCommand,
    "RecoveryResult": RecoveryResult,
    "NotificationResult": NotificationResult,
}


class BadInput(ValueError):
    """A message that cannot become a decider input; `reason` goes to the DLQ header."""


def decode_input(registry: SchemaRegistry, data: bytes | None) -> DeciderInput:
    if data is None:
        raise BadInput("empty message (null value)")
    try:
        name, record = registry.decode_any(data)
    except AvroCodecError as error:
        raise BadInput(str(error)) from None
    model = INPUT_MODELS.get(name)
    if model is None:
        raise BadInput(f"{name} is not an input of the decider")
    try:
        return model.model_validate(record)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise BadInput(f"invalid {name}: {problems}") from None


def input_record(message: DeciderInput) -> dict[str, Any]:
    return message.model_dump(mode="json")


def audit_record(event: AuditEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def decode_audit(registry: SchemaRegistry, data: bytes) -> AuditEvent:
    name, record = registry.decode_any(data)
    if name != "AuditEvent":
        raise AvroCodecError(f"expected AuditEvent, got {name}")
    return AuditEvent.model_validate(record)
