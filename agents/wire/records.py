"""Between the wire (Avro records as dicts) and the core's models."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import ValidationError

from agents.wire.codec import AvroCodecError, SchemaRegistry
from streams.models import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    OUTAGE_KEY_PREFIX,
    AdminCommand,
    AuditEvent,
    DeciderInput,
    EventType,
    HealthPing,
    HealthStatus,
    NotificationResult,
    OutageNotice,
    OutageSignal,
    RecoveryMode,
    RecoveryResult,
    Tick,
    Watch,
    WorkerInput,
)

INPUT_MODELS: dict[str, type[WorkerInput]] = {
    "HealthPing": HealthPing,
    "Tick": Tick,
    "Watch": Watch,
    "AdminCommand": AdminCommand,
    "RecoveryResult": RecoveryResult,
    "NotificationResult": NotificationResult,
    "OutageSignal": OutageSignal,
    "OutageNotice": OutageNotice,
}


class BadInput(ValueError):
    """A message that cannot become a decider input; `reason` goes to the DLQ header."""


def decode_input(
    registry: SchemaRegistry, data: bytes | None, *, validated: bool = False
) -> WorkerInput:
    """`validated`: the bytes are an input the router forwarded, so it validated them."""
    if data is None:
        raise BadInput("empty message (null value)")
    try:
        name, record = registry.decode_any(data)
    except AvroCodecError as error:
        raise BadInput(str(error)) from None
    if name == "HealthPing" and (validated or _valid_ping(record)):
        return _validated_ping(record)
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


def decode_connector_input(registry: SchemaRegistry, data: bytes | None) -> DeciderInput:
    """`decode_input` for a reader that handles connectors' inputs only."""
    message = decode_input(registry, data)
    if isinstance(message, OutageSignal):
        raise BadInput("OutageSignal is an outage's input, not a connector's")
    return message


_STATUSES: dict[object, HealthStatus] = {status.value: status for status in HealthStatus}
_MAX_CONNECTOR_ID = 249  # `streams.models.ConnectorId`


def _valid_ping(record: dict[str, Any]) -> bool:
    """What `HealthPing.model_validate` checks of a record the current schema decoded
    (Avro vouches for every field's type): the connector id's length, that it is not
    blank and not an outage's key, and the time's range. A record that fails goes through
    pydantic, for its error. tests/test_contracts.py holds the two equal on valid and
    invalid records."""
    connector_id = record["connector_id"]
    return (
        0 < len(connector_id) <= _MAX_CONNECTOR_ID
        and not connector_id.isspace()
        and not connector_id.startswith(OUTAGE_KEY_PREFIX)
        and MIN_TIMESTAMP_MS <= record["checked_at"] < MAX_TIMESTAMP_MS
    )


def _validated_ping(record: dict[str, Any]) -> HealthPing:
    """A ping the router validated (or `_valid_ping` vouches for): built the way pydantic's
    `model_construct` builds a model, without its per-field work, in ~0.9 µs against
    `model_validate`'s ~2 µs, once per ping. tests/test_contracts.py holds it equal to
    `model_validate` field by field, so a pydantic that stores models otherwise fails there."""
    status = _STATUSES.get(record["status"])
    if status is None:
        raise BadInput(f"invalid HealthPing: status {record['status']!r}")
    record["status"] = status  # fastavro's dict, ours alone
    ping = object.__new__(HealthPing)
    object.__setattr__(ping, "__dict__", record)
    object.__setattr__(ping, "__pydantic_fields_set__", set(record))
    object.__setattr__(ping, "__pydantic_extra__", None)
    object.__setattr__(ping, "__pydantic_private__", None)
    return ping


# Inputs of one inputs-topic record are numbered offset * BATCH_SLOTS + index, so a position
# orders every input of a partition (the table stores the last one applied per connector).
BATCH_SLOTS = 1024


class Unpacked(NamedTuple):
    message: WorkerInput | None  # None: not a decider input (see `problem`)
    position: int
    source: str  # for `attributes.source`: the inputs record, and the item in it
    origin: str | None  # where a batched item came from (topic/partition/offset)
    data: bytes | None
    problem: str | None = None


def unpack(
    registry: SchemaRegistry, data: bytes | None, topic: str, partition: int, offset: int
) -> list[Unpacked]:
    """The decider inputs of one record of the inputs topic: a single input (ticks, graces,
    notification results) or a router's `InputBatch`. The worker and every reference fold
    use this one function, so they number and label inputs alike."""
    record = f"{topic}/{partition}/{offset}"
    base = offset * BATCH_SLOTS
    try:
        if data is not None and registry.short_name_of(data) == "InputBatch":
            batch = registry.codec("InputBatch").decode(data)
            items = list(zip(batch["items"], batch["sources"], strict=True))
            if len(items) > BATCH_SLOTS:
                raise BadInput(f"InputBatch of {len(items)} items (at most {BATCH_SLOTS})")
        else:
            return [_one(registry, data, base, record, None)]
    except (AvroCodecError, ValueError) as error:
        return [Unpacked(None, base, record, None, data, f"bad input batch: {error}")]
    return [
        _one(registry, item, base + index, f"{record}#{index}", origin)
        for index, (item, origin) in enumerate(items)
    ]


def batch_origins(registry: SchemaRegistry, data: bytes | None) -> list[str]:
    """Where the inputs of an `InputBatch` record came from (none for a single input, or a
    record that is not a batch): what the router's read-back needs, without decoding each
    input (a worker's heartbeat graces alone are a million of them at a million connectors)."""
    try:
        if data is None or registry.short_name_of(data) != "InputBatch":
            return []
        sources: list[str] = registry.codec("InputBatch").decode(data)["sources"]
    except (AvroCodecError, ValueError):
        return []  # the decider dead-letters it; nothing of it was forwarded
    return sources


def _one(
    registry: SchemaRegistry, data: bytes | None, position: int, source: str, origin: str | None
) -> Unpacked:
    """`origin`: the item is of an `InputBatch`, which only the router (from inputs it
    validated) and the worker itself (from its own models) write."""
    try:
        message = decode_input(registry, data, validated=origin is not None)
        return Unpacked(message, position, source, origin, data)
    except BadInput as error:
        return Unpacked(None, position, source, origin, data, str(error))


def input_record(message: WorkerInput) -> dict[str, Any]:
    return message.model_dump(mode="json")


def audit_record(event: AuditEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def decode_audit(
    registry: SchemaRegistry, data: bytes, shared: dict[object, object] | None = None
) -> AuditEvent:
    """The event of single-object encoded bytes; `shared` as for `audit_event`."""
    name, record = registry.decode_any(data)
    if name != "AuditEvent":
        raise AvroCodecError(f"expected AuditEvent, got {name}")
    return audit_event(record, shared)


_EVENT_TYPES: dict[object, EventType] = {member.value: member for member in EventType}
_MODES: dict[object, RecoveryMode | None] = {None: None}
_MODES.update((member.value, member) for member in RecoveryMode)
_AUDIT_FIELDS = frozenset(AuditEvent.model_fields)
_set = object.__setattr__  # how pydantic itself fills a frozen model's slots


def audit_event(record: dict[str, Any], shared: dict[object, object] | None = None) -> AuditEvent:
    """The event of a record decoded with the current `audit_event.avsc` (the registry
    resolves older writers to it): its fields and no others, each of its Avro type (strings
    are str, longs int, `attributes` a str -> str map, `occurred_at` epoch millis). What
    Avro cannot say is checked here: the type is a known one, the mode one of the enum's,
    the connector id's length, a positive sequence. Such a record becomes the model without
    pydantic's validation of every field (about 4x the cost of this, per replayed event);
    any other record is validated as ever, and raises the same `ValidationError`. The
    record becomes the model's `__dict__`: the caller hands it over.

    `shared`, a table kept for a whole read, gives every event the first equal string of
    its connector id, tenant and failure kind: a fold keeps those per connector and per
    episode, and millions of events would otherwise leave millions of copies."""
    event_type = _EVENT_TYPES.get(record.get("type"))
    mode = record.get("mode")
    connector_id = record.get("connector_id")
    sequence = record.get("sequence")
    if (
        event_type is None
        or mode not in _MODES
        or type(connector_id) is not str
        or not 0 < len(connector_id) <= _MAX_CONNECTOR_ID
        or type(sequence) is not int
        or sequence < 1
    ):
        return AuditEvent.model_validate(record)
    record["type"] = event_type
    record["mode"] = _MODES[mode]
    if shared is not None:
        share = shared.setdefault
        record["connector_id"] = share(connector_id, connector_id)
        record["tenant_id"] = share(record["tenant_id"], record["tenant_id"])
        record["failure"] = share(record["failure"], record["failure"])
    event = AuditEvent.__new__(AuditEvent)
    # what `BaseModel.model_construct` sets, without its per-field pass over the record
    _set(event, "__dict__", record)
    _set(event, "__pydantic_fields_set__", set(_AUDIT_FIELDS))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event
