"""agents/worker/heap.py: once settled, what was alive is out of the collector's passes,
the young generation is collected far less often, and garbage is still freed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
