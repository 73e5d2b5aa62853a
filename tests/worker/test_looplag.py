"""The worker's event-loop lag monitor (agents/worker/looplag.py)."""

from __future__ import annotations

import asyncio
import time

from agents.worker.looplag import STALL_S, LoopLag


def test_a_blocked_loop_is_counted_as_a_stall_and_its_length_kept() -> None:
    counters: dict[str, int] = {}
    lag = LoopLag(counters)

    async def scenario() -> None:
        lag.start()
        await asyncio.sleep(0.06)
        time.sleep(STALL_S + 0.1)  # noqa: ASYNC251 - the stall under test
        await asyncio.sleep(0.12)

    asyncio.run(scenario())
    assert counters["loop_stalls"] >= 1
    assert counters["loop_lag_max_ms"] >= (STALL_S + 0.05) * 1000


def test_a_late_turn_under_the_threshold_is_no_stall() -> None:
    counters: dict[str, int] = {}
    lag = LoopLag(counters)
    lag.late(STALL_S / 2)
    assert counters == {"loop_lag_max_ms": round(STALL_S / 2 * 1000), "loop_stalls": 0}
    lag.late(STALL_S * 2)
    lag.late(STALL_S / 4)
    assert counters == {"loop_lag_max_ms": round(STALL_S * 2 * 1000), "loop_stalls": 1}
