"""How late the worker's event loop runs: a task that asks to wake every `EVERY_S` and
counts by how much it woke late. Everything the worker does (heartbeats to the group, the
decider, the views, the web pages) shares that one loop, so a late wake-up is a stall of
all of it. On `/metrics`: `connector_event_loop_lag_max_seconds` (the longest since
start) and `connector_event_loop_stalls_total` (wake-ups later than `STALL_S`)."""

from __future__ import annotations

import asyncio
import time

EVERY_S = 0.05
STALL_S = 0.2


class LoopLag:
    def __init__(self, counters: dict[str, int]) -> None:
        self.counters = counters
        counters.setdefault("loop_lag_max_ms", 0)
        counters.setdefault("loop_stalls", 0)
        self._task: asyncio.Future[None] | None = None

    def late(self, lag_s: float) -> None:
        counters = self.counters
        counters["loop_lag_max_ms"] = max(counters["loop_lag_max_ms"], round(lag_s * 1000))
        if lag_s > STALL_S:
            counters["loop_stalls"] += 1

    def start(self) -> None:
        """Once, from within the loop (a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(EVERY_S)
            self.late(max(0.0, time.monotonic() - asked - EVERY_S))
