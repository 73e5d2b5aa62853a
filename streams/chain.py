"""The evidence chain: canonical bytes and hashes of audit events.

Canonical bytes of an event = the UTF-8 JSON of every schema field except `hash`, keys
sorted, no whitespace, integers as integers, null as null, enums as their symbol, the
`attributes` map with sorted keys (RFC 8785 / JCS for these value types).
`hash = sha256(ascii(prev_hash) || canonical bytes)`, hex. Documented in schemas/README.md.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from streams.models import AuditEvent

HASHED_FIELDS = (
    "event_id",
    "type",
    "connector_id",
    "tenant_id",
    "sequence",
    "occurred_at",
    "incident_id",
    "attempt",
    "mode",
    "actor",
    "failure",
    "attributes",
    "prev_hash",
)


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """Canonical JSON of the hashed fields of an event given as a plain mapping.

    Enums are `StrEnum`s, which JSON encodes as their symbol; attributes are str -> str.
    orjson writes the same bytes as the standard library's encoder below for these value
    types (tests/core/test_chain.py checks it) in a fraction of the time; the standard
    encoder stays for what orjson refuses (integers beyond 64 bits).
    """
    body = {name: fields.get(name) for name in HASHED_FIELDS}
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return reference_canonical_bytes(body)


def reference_canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The definition of the canonical bytes (schemas/README.md), with the standard library."""
    body = {name: fields.get(name) for name in HASHED_FIELDS}
    return _ENCODER.encode(body).encode()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes(fields)).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """Recompute the hash an event should carry."""
    return chain_hash(event.prev_hash, event.__dict__)
