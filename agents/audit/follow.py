"""Following the audit topic into the live views (`streams.views.FleetView`): from the
views' last snapshot (agents/audit/snapshots.py) if it fits the topic, else from the
beginning, then the tail, for as long as the process runs.

This is what the worker's `/status` and `/metrics`, `connector-recovery status` and the admin
page read. It is a reader in no consumer group, so every process that follows the topic sees
the whole fleet whatever partitions it owns, and a restart shows exactly what a replay of
the same topic shows. `caught_up` is set once everything that was in the topic when the
follower started has been folded; until then the views are incomplete and say so.

What it costs: memory follows the fleet (the view's state); a restart folds only the events
written since the last snapshot (one is written once caught up, every `SNAPSHOT_EVERY_S`
while events arrive, and when the process stops). Folding runs in slices of at most
`FOLD_SLICE` records between which the event loop runs, so neither a long history nor a
burst holds the loop (the worker's heartbeats and web pages share it). Each folded event is
also written to the timeline index (agents/audit/timelines.py): a connector's timeline is
read from the topic when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.audit.snapshots import Restored, SnapshotError, SnapshotFile
from agents.audit.timelines import TimelineIndex
from agents.broker.client import reader, start_client, topic_partitions
from agents.broker.topics import cluster_id
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, registry
from agents.wire.records import decode_audit
from streams.evidence import EvidenceError
from streams.models import AuditEvent
from streams.views import FleetView

log = logging.getLogger("connector_recovery.views")

# How long one fetch waits for new records once caught up: bounds the delay between an event
# reaching the log and the views showing it.
TAIL_WAIT_MS = 100
# How often to look again for an audit topic that does not exist yet, and to say so.
TOPIC_RETRY_S = 1.0
TOPIC_COMPLAINT_EVERY_S = 30.0
# Records folded between two turns of the event loop (~20 ms of work).
FOLD_SLICE = 500
SNAPSHOT_EVERY_S = 60.0
# What the follower holds fetched ahead of its fold: enough to keep folding, not a history.
FETCH_MAX_BYTES = 8 << 20
FREEZE_EVERY = 100_000  # records folded between two freezes of the heap
PROGRESS_EVERY_S = 10.0
REPORT_EVERY_S = 0.5  # how often a child folding the views tells its parent how far it is


@dataclass
class FollowProgress:
    """How far the follower is: records read of those to fold at start (from the snapshot's
    offsets, or the beginning), how many of them were not ours to read (`verify` names
    them), and how many events the snapshot held."""

    read: int = 0
    total: int = 0
    undecodable: int = 0
    restored_events: int = 0  # events the snapshot held


class AuditFollower:
    """`views_dir`: where the snapshot and the timeline index live (one per process)."""

    def __init__(
        self,
        settings: Settings,
        views_dir: Path,
        on_event: Callable[[str, AuditEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.view = FleetView()
        self.on_event = on_event
        self.on_view: Callable[[], None] | None = None  # called when `view` is replaced whole
        # Connector ids the process holds already (a worker's first start: its indexes were
        # keyed before the views held the fleet): a snapshot restored shares them.
        self.known_ids: Mapping[str, str] | None = None
        self.caught_up = asyncio.Event()
        self.progress = FollowProgress()
        self.problem: str | None = None  # what keeps the views from following, if anything
        self.snapshots = SnapshotFile(views_dir / "views.snapshot")
        self._index_path = views_dir / "timelines"
        self._index: TimelineIndex | None = None
        self.offsets: dict[int, int] = {}  # audit partition -> next offset to fold
        self._codec = registry()
        self.cluster: str | None = None  # the Kafka cluster's id, once known
        self._snapshot_events = 0  # the view's event count at the last snapshot written
        self._consumer: AIOKafkaConsumer | None = None
        # Set once the view is what the snapshot holds (or known to start empty): from then
        # on `view.records` holds the connector ids the worker's indexes share.
        self.restored = asyncio.Event()
        self._restoring: asyncio.Task[dict[TopicPartition, int]] | None = None
        self._index_stale = False  # its entries are of a view no longer held
        self._folding_in_child = False  # the child holds the snapshot and the index
        self.said_why = False  # whether the fold from the beginning is explained already

    @property
    def index(self) -> TimelineIndex:
        """Opened on first use: a process that never folds an event never creates one."""
        if self._index is None:
            self._index = TimelineIndex(self._index_path)
        return self._index

    def timeline_positions(self, connector_id: str, limit: int) -> list[tuple[int, int, int]]:
        """(sequence, partition, offset) of the connector's newest `limit` events, newest
        first; none while a child process folds the views (it holds the index)."""
        if self._folding_in_child or self._index_stale:
            return []
        return self.index.newest(connector_id, limit)

    @property
    def topic(self) -> str:
        return self.settings.topics.audit

    async def connect(self) -> AIOKafkaConsumer:
        """The follower's consumer, started (KafkaConnectionError if no broker answers);
        `run` opens it if nobody did before."""
        if self._consumer is None:
            consumer = reader(self.settings, fetch_max_bytes=FETCH_MAX_BYTES)
            await start_client(consumer)
            self._consumer = consumer
        return self._consumer

    async def disconnect(self) -> None:
        """Close a consumer `connect` opened when `run` never ran (and stop a restore or
        a child's fold `begin` started)."""
        restoring = self._restoring
        if restoring is not None and not restoring.done():
            restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await restoring
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def begin(self) -> asyncio.Task[dict[TopicPartition, int]]:
        """Start restoring the snapshot in the background, if nothing started it yet: a
        worker does so before Faust starts, so the restore overlaps Faust's own start and
        its group join instead of following them; `run` goes on from it."""
        if self._restoring is None:
            self._restoring = asyncio.ensure_future(self._start())
        return self._restoring

    async def _start(self) -> dict[TopicPartition, int]:
        """The end offsets to catch up with from the view restored (or folded elsewhere)."""
        ends = await self._connect_and_restore()
        if self._worth_a_process(ends):
            ends = await self._fold_in_child(ends)
        return ends

    async def _connect_and_restore(self) -> dict[TopicPartition, int]:
        """The end offsets the restored view is to catch up with."""
        try:
            consumer = await self.connect()
            tps = await self._wait_for_topic(consumer)
            self.cluster = await self._cluster()
            starts = await consumer.beginning_offsets(tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            await self._restore(tps, starts, ends)
            return ends
        finally:
            self.restored.set()  # a failed restore holds nobody up: `run` raises its error

    async def run(self) -> None:
        """Until cancelled; the views are snapshotted when it is."""
        restoring = self.begin()
        try:
            try:
                ends = await restoring
            except BaseException:
                self._restoring = None  # a later `run` tries again
                raise
            consumer, behind = await self._from_offsets(ends)
            await self._follow(consumer, behind, ends)
        finally:
            try:
                if self.caught_up.is_set() and self._snapshot_due():
                    await self.snapshot()
            finally:
                if self._index is not None:
                    self._index.flush()
                await self.disconnect()

    async def _from_offsets(
        self, ends: dict[TopicPartition, int]
    ) -> tuple[AIOKafkaConsumer, set[TopicPartition]]:
        """The consumer at the view's offsets (the index cleared if it is of another view),
        and the partitions behind their `ends`."""
        if self._index_stale:
            self.index.clear()
            self._index_stale = False
        consumer = await self.connect()
        tps = sorted(ends, key=lambda tp: tp.partition)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self.offsets[tp.partition])
        self.progress.total = sum(ends[tp] - self.offsets[tp.partition] for tp in tps)
        return consumer, {tp for tp in tps if ends[tp] > self.offsets[tp.partition]}

    async def _follow(
        self,
        consumer: AIOKafkaConsumer,
        behind: set[TopicPartition],
        ends: dict[TopicPartition, int],
    ) -> None:
        await self._catch_up(consumer, behind, ends)
        await self._announce_caught_up()
        last_snapshot = time.monotonic()
        while True:
            await self._fold_slice(consumer)
            now = time.monotonic()
            if self._snapshot_due() and now - last_snapshot >= SNAPSHOT_EVERY_S:
                last_snapshot = now
                await self.snapshot()

    async def _catch_up(
        self,
        consumer: AIOKafkaConsumer,
        behind: set[TopicPartition],
        ends: dict[TopicPartition, int],
        report: Callable[[FollowProgress], None] | None = None,
    ) -> None:
        """Fold until every partition in `behind` reaches its end in `ends`, with a progress
        line every PROGRESS_EVERY_S (and `report`ed every REPORT_EVERY_S)."""
        began = last_said = last_reported = time.monotonic()
        frozen_at = 0
        while behind:
            await self._fold_slice(consumer)
            if self.progress.read - frozen_at >= FREEZE_EVERY:
                # The view grows with the fleet while a long history is folded; each of the
                # collector's full passes would walk all of it (a second's stall at 300k
                # connectors): what is alive now is long-lived, out of those passes.
                frozen_at = self.progress.read
                gc.freeze()
            for tp in list(behind):
                if self.offsets[tp.partition] >= ends[tp]:
                    behind.discard(tp)
            now = time.monotonic()
            if report is not None and now - last_reported >= REPORT_EVERY_S:
                last_reported = now
                report(self.progress)
            if behind and now - last_said >= PROGRESS_EVERY_S:
                last_said = now
                rate = self.progress.read / (now - began)
                log.warning(
                    "audit views: %s of %s events folded (%s/s); the views are incomplete"
                    " until then",
                    f"{self.progress.read:,}",
                    f"{self.progress.total:,}",
                    f"{rate:,.0f}",
                )

    async def _fold_slice(self, consumer: AIOKafkaConsumer) -> None:
        """One fetch of at most FOLD_SLICE records folded, then a turn of the event loop."""
        batch = await consumer.getmany(timeout_ms=TAIL_WAIT_MS, max_records=FOLD_SLICE)
        for tp, records in batch.items():
            for record in records:
                self._fold(tp.partition, record.offset, record.value)
            self.progress.read += len(records)
        await asyncio.sleep(0)  # a slice at most: the loop runs between two

    def _worth_a_process(self, ends: dict[TopicPartition, int]) -> bool:
        threshold = self.settings.views_fold_in_child_from
        behind = sum(end - self.offsets[tp.partition] for tp, end in ends.items())
        return 0 < threshold <= behind

    async def _fold_in_child(self, ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """A long way to the topic's end (a first start on a long history, a snapshot far
        behind) folded by a process of its own (agents/audit/child_fold.py), which writes
        the snapshot this process then restores: the fold gets a core of its own, and this
        process's event loop (the worker's decisions, the page) is never held by it. The
        end offsets to catch up with from there; if the child fails, this process folds."""
        from agents.audit import child_fold  # noqa: PLC0415 - the first fold of a long history alone needs it

        if self._index is not None:  # the child opens it (RocksDB: one process at a time)
            self._index.close()
            self._index = None
        self.progress.total = sum(end - self.offsets[tp.partition] for tp, end in ends.items())
        self._folding_in_child = True
        try:
            code = await child_fold.fold_in_child(
                self.settings, self.snapshots.path.parent, self.progress
            )
        finally:
            self._folding_in_child = False
        if code != 0:
            log.warning(
                "audit views: the fold's own process exited with code %s (its lines above say"
                " why); folding here instead",
                code,
            )
            return ends
        self.progress = FollowProgress()
        ends = await self._connect_and_restore()
        if self.on_view is not None:
            self.on_view()
        return ends

    async def fold_to_end(self, report: Callable[[FollowProgress], None]) -> None:
        """The child's work (child_fold.py): the views from the snapshot, if any, to the
        topic's end as it is now, snapshotted; `report` hears the progress."""
        ends = await self._connect_and_restore()
        try:
            consumer, behind = await self._from_offsets(ends)
            await self._catch_up(consumer, behind, ends, report)
            report(self.progress)
            if self._snapshot_due():
                await self.snapshot()
        finally:
            if self._index is not None:
                self._index.close()
            await self.disconnect()

    async def _restore(
        self,
        tps: list[TopicPartition],
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> None:
        """The snapshot, if there is one and it fits the topic; else the views start empty
        at the beginning of every partition."""
        began = time.monotonic()
        try:
            restored = await self.snapshots.load(self.known_ids)
            why = None if restored is not None else "there is none yet"
        except SnapshotError as error:
            restored, why = None, str(error)
        if restored is not None:
            why = self._misfit(restored, tps, starts, ends)
        if restored is not None and why is None:
            self.view = restored.view
            self.offsets = {tp.partition: restored.offsets[tp.partition] for tp in tps}
            self._index_stale = False  # written with the snapshot, up to its offsets
            self._snapshot_events = restored.view.events
            self.progress.restored_events = restored.view.events
            log.info(
                "audit views: restored %s events' worth from %s in %.1fs",
                f"{restored.view.events:,}",
                self.snapshots.path,
                time.monotonic() - began,
            )
            return
        self.view = FleetView()
        self.offsets = {tp.partition: starts[tp] for tp in tps}
        self._index_stale = True  # cleared by whoever folds: this process or its child
        if restored is not None or "there is none" not in (why or ""):
            self.snapshots.discard()
        total = sum(ends[tp] - starts[tp] for tp in tps)
        if total > FOLD_SLICE * 20 and not self.said_why:
            log.warning(
                "audit views: no usable snapshot (%s): folding all %s events of %s once",
                why,
                f"{total:,}",
                self.topic,
            )

    async def snapshot(self) -> None:
        """Write the views as they are now (and the timeline index up to them)."""
        began = time.monotonic()
        self.index.flush()
        offsets = dict(self.offsets)
        events = self.view.events
        try:
            size = await self.snapshots.save(self.view, self.cluster, self.topic, offsets)
        except OSError as error:  # the views go on; the next restart folds more
            log.warning("audit views: cannot write %s: %s", self.snapshots.path, error)
            return
        self._snapshot_events = events
        log.info(
            "audit views: snapshot of %s events (%s connectors, %.1f MB) in %.1fs",
            f"{self.view.events:,}",
            f"{len(self.view.records):,}",
            size / 1e6,
            time.monotonic() - began,
        )

    async def _announce_caught_up(self) -> None:
        log.info(
            "audit views caught up: %d records folded, %d undecodable",
            self.progress.read,
            self.progress.undecodable,
        )
        self.caught_up.set()
        if self._snapshot_due():
            await self.snapshot()

    def _snapshot_due(self) -> bool:
        return self.view.events != self._snapshot_events

    async def _cluster(self) -> str | None:
        try:
            return await cluster_id(self.settings)
        except KafkaError as error:  # a snapshot then fits only one taken without it either
            log.warning("audit views: cannot tell the Kafka cluster's id: %s", error)
            return None

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        said = float("-inf")
        while True:
            tps = await topic_partitions(consumer, self.topic)
            if tps:
                if self.problem is not None:
                    log.warning("audit views: %s exists now; following it", self.topic)
                self.problem = None
                return tps
            self.problem = (
                f"no audit topic {self.topic!r} on {self.settings.bootstrap_servers}: is"
                " CR_TOPIC_PREFIX right? (a worker creates it when it starts)"
            )
            if time.monotonic() - said >= TOPIC_COMPLAINT_EVERY_S:
                said = time.monotonic()
                log.error("%s; looking again every %gs", self.problem, TOPIC_RETRY_S)
            await asyncio.sleep(TOPIC_RETRY_S)

    def _fold(self, partition: int, offset: int, value: bytes | None) -> None:
        self.offsets[partition] = offset + 1
        try:
            event = decode_audit(self._codec, value or b"")
        except (AvroCodecError, ValidationError, ValueError) as error:
            # Not ours (a stray producer): `verify` reports it; the views must go on.
            self.progress.undecodable += 1
            log.error("undecodable audit record at %s/%s: %s", partition, offset, error)
            return
        try:
            applied = self.view.apply(event)
        except EvidenceError as error:
            log.error("audit record at %s/%s has malformed evidence: %s", partition, offset, error)
            return
        if applied:
            self.index.add(event.connector_id, event.sequence, partition, offset)
            if self.on_event is not None:
                self.on_event(f"{partition}/{offset}", event)

    def _misfit(
        self,
        restored: Restored,
        tps: list[TopicPartition],
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> str | None:
        """Why a snapshot cannot continue on this topic (None if it can): another topic, other
        partitions, or an offset outside what the topic holds (re-created, truncated, another
        cluster)."""
        cluster, topic, offsets = restored.cluster, restored.topic, restored.offsets
        if cluster != self.cluster:
            return f"it is of Kafka cluster {cluster}, not {self.cluster}"
        if topic != self.topic:
            return f"it is of topic {topic!r}"
        if set(offsets) != {tp.partition for tp in tps}:
            return f"it has partitions {sorted(offsets)}, the topic {len(tps)}"
        for tp in tps:
            held = offsets[tp.partition]
            if held > ends[tp]:
                return f"partition {tp.partition} ends at {ends[tp]}, before its offset {held}"
            if held < starts[tp]:
                return f"partition {tp.partition} starts at {starts[tp]}, after its offset {held}"
        return None
