"""Audit checkpoints: the heads of every chain in one audit partition, digested.

`heads_digest` is pure so the worker that writes a checkpoint and the auditor who checks it
compute it the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from streams.models import GENESIS_HASH


def heads_digest(heads: Mapping[str, tuple[int, str]]) -> str:
    """The SHA-256 of a line per chain, `connector<TAB>sequence<TAB>head hash`, sorted by
    connector; hashed a line at a time (a partition of a large fleet is tens of MB of lines)."""
    digest = hashlib.sha256()
    for connector in sorted(heads):
        sequence, head = heads[connector]
        digest.update(f"{connector}\t{sequence}\t{head}\n".encode())
    return digest.hexdigest()


def checkpoint_record(
    partition: int,
    end_offset: int,
    heads: Mapping[str, tuple[int, str]],
    written_at: int,
    prev_hash: str = GENESIS_HASH,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partition": partition,
        "end_offset": end_offset,
        "connectors": len(heads),
        "heads_sha256": heads_digest(heads),
        "written_at": written_at,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**body, "hash": hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()}


def checkpoint_intact(record: Mapping[str, Any]) -> bool:
    """The checkpoint's own hash matches its content."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    prev = str(body.get("prev_hash", ""))
    return hashlib.sha256(prev.encode("ascii") + canonical).hexdigest() == record.get("hash")
