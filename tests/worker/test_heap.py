"""agents/worker/heap.py: once settled, what was alive is out of the collector's passes,
the young generation is collected far less often, and garbage is still freed."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from agents.worker.heap import YOUNG_THRESHOLD

# In a process of its own: the settings are global, and the suite's own must stay default.
PROBE = textwrap.dedent(
    """
    import gc, weakref
    from agents.worker import heap

    class Node:
        pass

    kept = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    heap.settle()
    frozen = gc.get_freeze_count() - before

    cycle = Node()
    cycle.self = cycle
    alive = weakref.ref(cycle)
    del cycle
    gc.collect()
    print(frozen, gc.get_threshold()[0], alive() is None)
    """
)


def test_settle_freezes_the_live_heap_and_raises_the_young_threshold() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    frozen, young, cycle_freed = run.stdout.split()
    assert int(frozen) >= 1000  # the kept nodes, at least
    assert int(young) == YOUNG_THRESHOLD
    assert cycle_freed == "True"  # a cycle made after settling is still collected


# Freed blocks of a glibc heap stay resident until given back: 200 MB of 1,000-byte blocks
# (past pymalloc's 512, so from malloc), a block kept after them so the heap's top cannot
# shrink by itself, then all but that one freed.
GIVE_BACK = textwrap.dedent(
    """
    import os
    from agents.worker import heap

    def resident_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    blocks = [bytearray(1000) for _ in range(200_000)]
    pinned = bytearray(1000)
    del blocks
    before = resident_mb()
    given = heap.give_back()
    print(given, round(before - resident_mb()))
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_give_back_returns_freed_heap_pages_to_the_system() -> None:
    run = subprocess.run(
        [sys.executable, "-c", GIVE_BACK], capture_output=True, text=True, check=True, timeout=60
    )
    given, returned_mb = run.stdout.split()
    assert given == "True"
    assert int(returned_mb) >= 100, run.stdout
