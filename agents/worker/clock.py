"""In-memory index of the next deadline of each connector this worker owns.

A lazy min-heap: an entry is pushed only when a connector's deadline moves *earlier* than
what is scheduled; when a stale entry pops, the true deadline is re-pushed. So the common
case (a healthy ping moving a heartbeat deadline later) costs one dict write, and a clock
tick costs O(due · log n) — never a scan of every connector.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping


class DeadlineIndex:
    """Invariant: every connector with a deadline has a heap entry at or before it. One
    dict and the heap, per connector of the fleet: a later deadline (a steady ping) pushes
    nothing, an earlier one pushes an entry; a stale entry is re-pushed when it pops."""

    def __init__(self, ids: Callable[[str], str] | None = None) -> None:
        self._deadline: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        # a connector id as the process already holds it (`WorkerApp.held_id`): the index
        # then holds no copy of its own
        self._ids = ids

    def __len__(self) -> int:
        return len(self._deadline)

    def held(self, connector_id: str) -> str:
        """`connector_id` as the process holds it already, if it does."""
        return connector_id if self._ids is None else self._ids(connector_id)

    def schedule(self, connector_id: str, deadline: int | None) -> None:
        if deadline is None:
            self._deadline.pop(connector_id, None)
            return
        before = self._deadline.get(connector_id)
        if before is None or deadline < before:
            connector_id = self.held(connector_id)
            heapq.heappush(self._heap, (deadline, connector_id))
        self._deadline[connector_id] = deadline  # a key present keeps its first object

    def forget(self) -> None:
        """Drop every connector, e.g. before the index is rebuilt after a rebalance."""
        self._deadline.clear()
        self._heap.clear()

    def pop_due(self, now: int) -> list[str]:
        """Connectors whose deadline is at or before `now` (each once)."""
        due: list[str] = []
        heap = self._heap
        deadlines = self._deadline
        while heap and heap[0][0] <= now:
            at, connector_id = heapq.heappop(heap)
            deadline = deadlines.get(connector_id)
            if deadline is None:
                continue  # fired already, or unscheduled
            if deadline <= now:
                due.append(connector_id)
                # Until the tick is processed and re-indexes it, don't fire it again.
                del deadlines[connector_id]
            elif at < deadline and (not heap or heap[0] != (deadline, connector_id)):
                heapq.heappush(heap, (deadline, connector_id))  # moved later since pushed
        return due


# A partition more than this many inputs-topic records behind gets no ticks: its ticks would
# find deadlines computed from old inputs (harmless, the tick lands after the newer ones,
# but wasted work while the worker is behind). Counted in records, each of which may be an
# InputBatch of up to agents.worker.router.BATCH_ITEMS inputs, so a few records; a limit of
# 2,000 "inputs" counted in records was a million pings.
LAG_LIMIT_RECORDS = 4


def lagging_partitions(
    highwaters: Mapping[int, int | None], next_offsets: Mapping[int, int]
) -> set[int]:
    """The owned inputs partitions with more than LAG_LIMIT_RECORDS records unread."""
    return {
        partition
        for partition, highwater in highwaters.items()
        if highwater is not None and highwater - next_offsets.get(partition, 0) > LAG_LIMIT_RECORDS
    }


def due_ticks(
    index: DeadlineIndex,
    now: int,
    lagging: set[int],
    partition_of: Callable[[str], int],
    retry_ms: int,
) -> list[str]:
    """The connectors to tick at `now` (the inputs front: wall time only when nothing is
    unread upstream, agents.worker.router.Router.front). Deadlines after it wait in the
    index: a connector's next ping may be unread, and the clock must not declare a heartbeat
    missed — or fire any deadline — ahead of the data. A connector whose inputs partition is
    behind is asked again `retry_ms` later, until its partition has caught up."""
    ticks: list[str] = []
    for connector_id in index.pop_due(now):
        if partition_of(connector_id) in lagging:
            index.schedule(connector_id, now + retry_ms)
        else:
            ticks.append(connector_id)
    return ticks


class Clock:
    """The worker's timer: ticks for the deadlines due up to the inputs front (`front`,
    None while nothing is known about the inputs), except on lagging partitions."""

    def __init__(
        self,
        *,
        deadlines: DeadlineIndex,
        front: Callable[[int], Awaitable[int | None]],
        highwaters: Callable[[], Mapping[int, int | None]],
        next_offsets: Callable[[], Mapping[int, int]],
        partition_of: Callable[[str], int],
        retry_ms: int,
        send_ticks: Callable[[list[str], int], Awaitable[None]],
    ) -> None:
        self.deadlines = deadlines
        self.front = front
        self.highwaters = highwaters
        self.next_offsets = next_offsets
        self.partition_of = partition_of
        self.retry_ms = retry_ms
        self.send_ticks = send_ticks

    async def tick(self, wall_now: int) -> None:
        now = await self.front(wall_now)
        if now is None:
            return
        lagging = lagging_partitions(self.highwaters(), self.next_offsets())
        ticks = due_ticks(self.deadlines, now, lagging, self.partition_of, self.retry_ms)
        if ticks:  # together: a storm's deadlines fall due together
            await self.send_ticks(ticks, now)
