"""The garbage collector's settings for a long-running worker process (P1, P2).

A ready worker holds a parsed state per owned connector (a million at scale) and Faust's
own objects, and each ping allocates a few short-lived dicts and models. With CPython's
default young-generation threshold (700 allocations) the collector runs every few dozen
pings, and each of its full passes walks every long-lived object: 7.5% of the decider's
time at 50,000 pings/s (BENCHMARKS.md, P1 history). So once the process is ready, what is
alive then is frozen out of the collector's passes (reference counting still frees it as
ever; only a reference cycle among frozen objects would outlive its use), and the young
generation is collected every YOUNG_THRESHOLD allocations instead.

What the process frees stays in the C allocator's heap until it is given back: glibc keeps
free pages inside its heap, so a start (a snapshot parsed, a table scanned) or a storm
leaves the resident set above what is alive. `give_back` returns them (`malloc_trim`): at
`ready`, and then every GIVE_BACK_EVERY_S.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("connector_recovery.heap")

YOUNG_THRESHOLD = 20_000
GIVE_BACK_EVERY_S = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Return the C heap's free pages to the system; False where that cannot be done."""
    if _TRIM is None:
        return False
    began = time.perf_counter()
    _TRIM(0)
    log.debug("free heap pages given back in %.1f ms", (time.perf_counter() - began) * 1000)
    return True


def settle() -> None:
    """Call once the process holds its long-lived objects (a worker: when it is ready).
    The young generations only are collected first: a full pass over a large fleet's
    objects held the loop 0.3 s, and what it would free is the start's few cycles."""
    gc.collect(1)
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    give_back()
