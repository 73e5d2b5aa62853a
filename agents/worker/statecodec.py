"""Compact bytes for the per-connector state table (JSON arrays in field order).

The table is a cache of the state of record (rebuildable from the audit log) plus the
transient detector memory; its format is private to the worker, versioned by `FORMAT`.
Liveness (last ping time, heartbeat deadline) is not in it: it changes with every ping,
and writing it would turn every steady ping into a changelog record. The worker keeps it
in memory; a new owner starts it from the heartbeat grace (a `Watch`).
"""

from __future__ import annotations

import json
from typing import Any

from streams.models import RecoveryMode
from streams.state import ConnectorState, DetectorMemory, Phase, Record

FORMAT = 3  # 3: the applied position is offset * BATCH_SLOTS + item index
_RECORD_FIELDS = Record._fields
_MEMORY_FIELDS = DetectorMemory._fields


class StateFormatError(ValueError):
    pass


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    return value


def dump_state(state: ConnectorState, applied_offset: int = -1) -> bytes:
    """`applied_offset`: position (agents.wire.records.unpack) in the inputs partition of the last
    input applied."""
    record = [_plain(v) for v in state.record]
    memory = list(state.memory)
    envelope = [FORMAT, record, memory, applied_offset]
    return json.dumps(envelope, separators=(",", ":")).encode()


_SEQUENCE = _RECORD_FIELDS.index("sequence")
_HEAD_HASH = _RECORD_FIELDS.index("head_hash")


def load_head(data: bytes) -> tuple[int, str]:
    """Only the chain head (sequence, hash): what a scan of the whole table needs."""
    try:
        record = json.loads(data)[1]
        return int(record[_SEQUENCE]), str(record[_HEAD_HASH])
    except (ValueError, TypeError, IndexError) as error:
        raise StateFormatError(f"unreadable state: {error}") from None


def load_state(data: bytes) -> tuple[ConnectorState, int]:
    """The state (without liveness) and the offset of the last input applied to it."""
    try:
        envelope = json.loads(data)
        version, record, memory, applied = envelope
    except (ValueError, TypeError) as error:
        raise StateFormatError(f"unreadable state: {error}") from None
    if version != FORMAT:
        raise StateFormatError(f"state format {version} (this worker reads {FORMAT})")
    values = dict(zip(_RECORD_FIELDS, record, strict=True))
    values["phase"] = Phase(values["phase"])
    values["notified"] = frozenset(values["notified"])
    if values["attempt_mode"] is not None:
        values["attempt_mode"] = RecoveryMode(values["attempt_mode"])
    state = ConnectorState(
        Record(**values),
        DetectorMemory(**dict(zip(_MEMORY_FIELDS, memory, strict=True))),
    )
    return state, int(applied)
