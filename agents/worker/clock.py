"""In-memory index of the next deadline of each connector this worker owns.

Lazy buckets of a second each (a calendar queue): a connector is filed in a bucket only
when its deadline moves into an *earlier* bucket than the one it was filed in; when a
bucket comes due, an entry whose deadline has since moved later is filed again. So the
common case (a healthy ping moving a heartbeat deadline later) costs one dict write, a
clock tick costs O(due) plus the buckets it opens, never a scan of every connector, and a
connector costs the index a dict entry and a list slot (a heap of (deadline, id) tuples
cost 64 bytes more per connector: 20 MiB at 322k connectors).
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterator, Mapping

from agents.worker.heldids import rekey

BUCKET_MS = 1000


class DeadlineIndex:
    """Invariant: every connector with a deadline is filed in a bucket at or before its
    deadline's."""

    def __init__(self, ids: Callable[[str], str] | None = None) -> None:
        self._deadline: dict[str, int] = {}
        self._buckets: dict[int, list[str]] = {}  # bucket (deadline // BUCKET_MS) -> filed
        self._heap: list[int] = []  # the buckets, soonest first
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
        if before is None or deadline // BUCKET_MS < before // BUCKET_MS:
            connector_id = self.held(connector_id)
            self._file(connector_id, deadline // BUCKET_MS)
        self._deadline[connector_id] = deadline  # a key present keeps its first object

    def _file(self, connector_id: str, bucket: int) -> None:
        filed = self._buckets.get(bucket)
        if filed is None:
            self._buckets[bucket] = [connector_id]
            heapq.heappush(self._heap, bucket)
        else:
            filed.append(connector_id)

    def share_ids(self, slice_rows: int) -> Iterator[None]:
        """Every connector keyed and filed on its id as the process holds it (`held`): a
        first start decides its heartbeat graces before the views hold the fleet, so the
        index held ids of its own (322,000 strings at 10M events: BENCHMARKS.md, P6).
        Yields after every `slice_rows` rows, for the caller to give the loop a turn; an
        entry changed between two yields is kept as it is then."""
        if (yield from rekey(self._deadline, self.held, slice_rows)):
            self._deadline = dict(self._deadline)
        row = 0
        for filed in list(self._buckets.values()):
            for position, connector_id in enumerate(filed):
                filed[position] = self.held(connector_id)
                row += 1
                if not row % slice_rows:
                    yield

    def forget(self) -> None:
        """Drop every connector, e.g. before the index is rebuilt after a rebalance."""
        self._deadline.clear()
        self._buckets.clear()
        self._heap.clear()

    def pop_due(self, now: int) -> list[str]:
        """Connectors whose deadline is at or before `now` (each once), soonest first."""
        due: list[tuple[int, str]] = []
        heap = self._heap
        deadlines = self._deadline
        now_bucket = now // BUCKET_MS
        while heap and heap[0] <= now_bucket:
            bucket = heapq.heappop(heap)
            later_in_bucket = []
            for connector_id in self._buckets.pop(bucket):
                deadline = deadlines.get(connector_id)
                if deadline is None:
                    continue  # fired already, or unscheduled
                if deadline <= now:
                    due.append((deadline, connector_id))
                    # Until the tick is processed and re-indexes it, don't fire it again.
                    del deadlines[connector_id]
                elif deadline // BUCKET_MS == bucket:
                    later_in_bucket.append(connector_id)  # `now` is within this bucket
                else:
                    self._file(connector_id, deadline // BUCKET_MS)  # moved later since filed
            if later_in_bucket:
                self._buckets[bucket] = later_in_bucket
                heapq.heappush(heap, bucket)
                break  # the bucket of `now`: every later one is later than `now`
        due.sort()
        return [connector_id for _deadline, connector_id in due]


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
