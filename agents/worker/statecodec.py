"""Compact bytes for the per-connector state table (JSON arrays in field order).

The table is a cache of the state of record (rebuildable from the audit log) plus the
transient detector memory; its format is private to the worker, versioned by `FORMAT`.
Liveness (last ping time, heartbeat deadline) is not written for its own sake: it changes
with every ping, and writing it would turn every steady ping into a changelog record. The
worker keeps it in memory; a new owner starts the deadline from the heartbeat grace (a
`Watch`), and the last ping time from the one written with the state's last change (a
bound below the true one: a ping older than it is late).
"""

from __future__ import annotations

import json
from json.scanner import make_scanner

import orjson

from streams.models import RecoveryMode
from streams.outages import OutageMemory, OutageRecord, OutageState, Pending, members_of
from streams.state import ConnectorState, DetectorMemory, Phase, Record

FORMAT = 3  # 3: the applied position is offset * BATCH_SLOTS + item index
_RECORD_FIELDS = Record._fields
_MEMORY_FIELDS = DetectorMemory._fields
_NOTIFIED = _RECORD_FIELDS.index("notified")  # a frozenset: JSON has no sets
_NONE_NOTIFIED: frozenset[str] = frozenset()  # one object, not 216 bytes per parsed state


class StateFormatError(ValueError):
    pass


def dump_state(state: ConnectorState, applied_offset: int = -1) -> bytes:
    """`applied_offset`: position (agents.wire.records.unpack) in the inputs partition of the last
    input applied."""
    record: list[object] = list(state.record)
    record[_NOTIFIED] = sorted(state.record.notified)
    memory = list(state.memory)
    # The last applied ping's time as of this write (a bound the liveness only moves past):
    # after a restart, a ping older than it (one the router forwards again) is late, not
    # judged anew.
    envelope = [FORMAT, record, memory, applied_offset, state.last_checked_at]
    try:
        return orjson.dumps(envelope)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (a flap window that wide)
        return json.dumps(envelope, separators=(",", ":")).encode()


_SEQUENCE = _RECORD_FIELDS.index("sequence")
_HEAD_HASH = _RECORD_FIELDS.index("head_hash")


# The json module's (C) scanner: parses one JSON value at a position and says where it
# ended, so `load_head` reads the first fields of a record and stops there.
_scan_value = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: context is a scanner; CPython reads it off a decoder
_HEAD_PREFIX = f"[{FORMAT},["  # dump_state writes no whitespace


def load_head(data: bytes) -> tuple[int, str]:
    """Only the chain head (sequence, hash): what a scan of the whole table needs. It reads
    the record's fields up to the head hash (the 4th of 28), 5x faster than `json.loads` of
    the whole state: at a million connectors, 8 s of a new owner's assignment scan."""
    try:
        text = data.decode()
        if not text.startswith(_HEAD_PREFIX):
            raise ValueError(f"not a state of format {FORMAT}")
        position = len(_HEAD_PREFIX)
        fields = []
        for _ in range(_HEAD_HASH + 1):
            value, position = _scan_value(text, position)
            if text[position] != ",":
                raise ValueError(f"no field after column {position}")
            fields.append(value)
            position += 1
        return int(fields[_SEQUENCE]), str(fields[_HEAD_HASH])
    except (ValueError, TypeError, IndexError, StopIteration) as error:
        raise StateFormatError(f"unreadable state: {error!r}") from None


def load_state(data: bytes) -> tuple[ConnectorState, int]:
    """The state (its last ping time as of its write; no heartbeat deadline) and the offset
    of the last input applied to it."""
    try:
        envelope = json.loads(data)
        version, record, memory, applied, *liveness = envelope  # written without it before
    except (ValueError, TypeError) as error:
        raise StateFormatError(f"unreadable state: {error}") from None
    if version != FORMAT:
        raise StateFormatError(f"state format {version} (this worker reads {FORMAT})")
    if len(record) > len(_RECORD_FIELDS) or len(memory) > len(_MEMORY_FIELDS):
        raise StateFormatError("unreadable state: more fields than this worker knows")
    # Fields added since a state was written (at the end, with defaults) take their
    # defaults: a table written by the previous version is read as it is.
    values = dict(zip(_RECORD_FIELDS, record, strict=False))
    values["phase"] = Phase(values["phase"])
    notified = values["notified"]
    values["notified"] = frozenset(notified) if notified else _NONE_NOTIFIED  # most: none
    if values["attempt_mode"] is not None:
        values["attempt_mode"] = RecoveryMode(values["attempt_mode"])
    state = ConnectorState(
        Record(**values),
        DetectorMemory(**dict(zip(_MEMORY_FIELDS, memory, strict=False))),
        liveness[0] if liveness else None,
    )
    return state, int(applied)


# -- outages (docs/outages.md) ----------------------------------------------------------------
# An outage's state sits in the same table under its key `outage:<group>`, in the same
# envelope, its record's first four fields where a connector's are (id, tenant, sequence,
# head hash): `load_head` and the assignment's table scan read both alike.


def dump_outage(state: OutageState, applied_offset: int) -> bytes:
    record: list[object] = list(state.record)
    record[_OUTAGE_MEMBERS] = sorted(state.record.members)
    record[_OUTAGE_NOTIFIED] = sorted(state.record.notified)
    memory = state.memory
    stored_memory = [
        [list(pending) for pending in memory.pending],
        sorted(memory.failing),
        memory.recovered,
        memory.left,
        memory.probe,
        memory.release_from,
        list(memory.releasing),
        memory.released,
    ]
    return orjson.dumps([FORMAT, record, stored_memory, applied_offset])


_OUTAGE_FIELDS = OutageRecord._fields
_OUTAGE_MEMBERS = _OUTAGE_FIELDS.index("members")
_OUTAGE_NOTIFIED = _OUTAGE_FIELDS.index("notified")


def load_outage(data: bytes) -> tuple[OutageState, int]:
    """The outage's state and the position of the last input applied to it."""
    try:
        version, record, memory, applied = json.loads(data)
        if version != FORMAT:
            raise StateFormatError(f"state format {version} (this worker reads {FORMAT})")
        if len(record) > len(_OUTAGE_FIELDS):
            raise StateFormatError("more fields than this worker knows")
        # fields added since (at the end, with defaults) take their defaults
        values = dict(zip(_OUTAGE_FIELDS, record, strict=False))
        values["members"] = members_of(values["members"])
        values["tenants"] = tuple(values.get("tenants", ()))
        values["notified"] = frozenset(values.get("notified", ()))
        pending, failing, recovered, left, *breaker = memory
        # the circuit breaker's fields came later: a state without them has none running
        probe, release_from, releasing, released = breaker or (None, None, [], 0)
        state = OutageState(
            OutageRecord(**values),
            OutageMemory(
                tuple(Pending(*entry) for entry in pending),
                members_of(failing),
                int(recovered),
                int(left),
                probe,
                release_from,
                tuple(releasing),
                int(released),
            ),
        )
        return state, int(applied)
    except (ValueError, TypeError) as error:
        raise StateFormatError(f"unreadable outage state: {error}") from None
