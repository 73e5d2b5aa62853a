"""Capped exponential backoff with full jitter, reproducible from the log.

delay(n) = u * min(cap, base * 2**(n-1)), with u in [0, 1) drawn from
sha256("{connector_id}|{incident_id}|{attempt}") instead of a random generator, so the live
worker and a replay compute the same delay (AWS Architecture Blog, "full jitter").
"""

from __future__ import annotations

import hashlib

from streams.policy import Backoff

_TWO_64 = float(2**64)


def jitter_fraction(connector_id: str, incident_id: str, attempt: int) -> float:
    digest = hashlib.sha256(f"{connector_id}|{incident_id}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def backoff_delay_ms(backoff: Backoff, connector_id: str, incident_id: str, attempt: int) -> int:
    ceiling_s = min(backoff.cap_s, backoff.base_s * 2 ** (attempt - 1))
    return int(jitter_fraction(connector_id, incident_id, attempt) * ceiling_s * 1000)
