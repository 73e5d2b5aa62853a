"""The garbage collector's settings for a long-running worker process (P1, P2).

A ready worker holds a parsed state per owned connector (a million at scale) and Faust's
own objects, and each ping allocates a few short-lived dicts and models. With CPython's
default young-generation threshold (700 allocations) the collector runs every few dozen
pings, and each of its full passes walks every long-lived object: 7.5% of the decider's
time at 50,000 pings/s (BENCHMARKS.md, P1 history). So once the process is ready, what is
alive then is frozen out of the collector's passes (reference counting still frees it as
ever; only a reference cycle among frozen objects would outlive its use), and the young
generation is collected every YOUNG_THRESHOLD allocations instead.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Call once the process holds its long-lived objects (a worker: when it is ready).
    The young generations only are collected first: a full pass over a large fleet's
    objects held the loop 0.3 s, and what it would free is the start's few cycles."""
    gc.collect(1)
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
