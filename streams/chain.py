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

_EVENT_FIELDS = frozenset((*HASHED_FIELDS, "hash"))


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """Canonical JSON of the hashed fields of an event given as a plain mapping.

    Enums are `StrEnum`s, which JSON encodes as their symbol; attributes are str -> str.
    orjson writes the same bytes as the standard library's encoder below for these value
    types (tests/core/test_chain.py checks it) in a fraction of the time; the standard
    encoder stays for what orjson refuses (integers beyond 64 bits).
    """
    if fields.keys() == _EVENT_FIELDS:  # an event's own fields: all of them but its hash
        body = fields.copy()
        del body["hash"]
    else:
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


def chain_digest(prev_hash: str, fields: dict[str, Any]) -> bytes:
    """The 32 bytes of the hash (`chain_hash` is their hex)."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes(fields)).digest()


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return chain_digest(prev_hash, fields).hex()


def event_digest(event: AuditEvent) -> bytes:
    """The 32 bytes of the hash an event should carry."""
    return chain_digest(event.prev_hash, event.__dict__)


def event_hash(event: AuditEvent) -> str:
    """Recompute the hash an event should carry."""
    return event_digest(event).hex()


class SeenHashes:
    """The hashes of one chain's events by sequence, for telling an identical re-send from
    a conflicting one. Sequences run 1, 2, 3 …, so canonical (lowercase hex SHA-256) hashes
    are kept as 32 raw bytes at slot `sequence - 1` of one buffer: a replay of millions of
    events holds 32 bytes per event instead of a string and a dict entry. Anything else
    (a non-canonical hash, a sequence far past the end) goes to a small dict, made when
    first needed."""

    __slots__ = ("_digests", "_others")

    MAX_PADDING = 4096  # empty slots a gap may open in the buffer before the dict takes over

    def __init__(self) -> None:
        self._digests = bytearray()
        self._others: dict[int, str] | None = None

    def get(self, sequence: int) -> str | None:
        if self._others is not None:
            other = self._others.get(sequence)
            if other is not None:
                return other
        start = (sequence - 1) * 32
        if sequence < 1 or start >= len(self._digests):
            return None
        digest = self._digests[start : start + 32]
        return digest.hex() if any(digest) else None

    def __setitem__(self, sequence: int, hash_hex: str) -> None:
        self.add(sequence, hash_hex, None)

    def add(self, sequence: int, hash_hex: str, digest: bytes | None) -> None:
        """`self[sequence] = hash_hex`; `digest`, when given, is `bytes.fromhex(hash_hex)`
        and `hash_hex` is canonical (a hash just recomputed and found equal)."""
        start = (sequence - 1) * 32
        if start == len(self._digests) and digest is not None and digest != _EMPTY_SLOT:
            if self._others is not None:
                self._others.pop(sequence, None)
            self._digests += digest  # the next sequence of an intact chain: the usual case
            return
        fits = sequence >= 1 and start <= len(self._digests) + self.MAX_PADDING * 32
        digest = _digest(hash_hex) if fits else None
        if digest is None:
            if self._others is None:
                self._others = {}
            self._others[sequence] = hash_hex
            return
        if self._others is not None:
            self._others.pop(sequence, None)
        if start > len(self._digests):
            self._digests.extend(bytes(start - len(self._digests)))
        self._digests[start : start + 32] = digest


_EMPTY_SLOT = bytes(32)


def _digest(hash_hex: str) -> bytes | None:
    """The 32 bytes of a canonical hash; None for anything else (kept verbatim)."""
    if len(hash_hex) != 64:
        return None
    try:
        digest = bytes.fromhex(hash_hex)
    except ValueError:
        return None
    return digest if digest.hex() == hash_hex and digest != _EMPTY_SLOT else None
