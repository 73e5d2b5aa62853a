"""Rebalance recovery: what a worker does when partitions are assigned to it, a method per
step, in the order `run` calls them. After it, the processor holds the log ahead of the
table (crash repair), the checkpoints their heads and positions, the gap filler its next
offsets, and every owned connector has a heartbeat grace on its way."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from agents.broker.client import client_options, reader
from agents.settings import Settings
from agents.wire.codec import SchemaRegistry
from agents.wire.partitioning import partition_of
from agents.worker.checkpoints import AuditCheckpoints, pack_head
from agents.worker.effects import Effects
from agents.worker.graces import Graces
from agents.worker.logahead import LogAhead, audit_ends, read_ahead
from agents.worker.processor import InputProcessor
from agents.worker.repair_process import FoundAhead, repair_in_child
from agents.worker.tablescan import OwnedState, scan_owned
from streams.policy import Policy
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

HANDED_OVER_SLICE = 5_000  # repaired states handed to the processor between two turns


class RebalanceRecovery:
    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        registry: SchemaRegistry,
        processor: InputProcessor,
        checkpoints: AuditCheckpoints,
        effects: Effects,
        raw_producer: Callable[[], Awaitable[AIOKafkaProducer]],
        crash: Callable[[BaseException], Awaitable[None]],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry
        self.processor = processor
        self.checkpoints = checkpoints
        self.effects = effects
        self.raw_producer = raw_producer
        self.stopping = stopping  # a SIGTERM: a long read-ahead is left, not finished
        self.graces = Graces(settings, registry, raw_producer, crash)
        # The offset each owned inputs partition must deliver next (from the committed
        # offsets at assignment): an event past it means Faust skipped inputs (gaps.py).
        self.next_offsets: dict[int, int] = {}
        self._owned_before: set[int] = set()

    async def run(self, owned: set[int], table: Any, now: int) -> None:
        """`table`: the Faust table of connector states (tablescan.py reads it)."""
        began = time.monotonic()
        scan = await scan_owned(
            table, owned, self.settings.partitions, self.processor.deadlines.held
        )
        scanned = time.monotonic()
        committed = await self.committed_inputs(owned)
        self.resume_offsets(owned, committed)
        await self.read_log_ahead(owned, scan)
        self.rebuild_heads(scan)
        await self.checkpoints.share_ids(self.processor.deadlines.held)  # heldids.py
        await self.checkpoints.read_last(self.settings, self.effects.checkpoint_codec)
        connectors = scan.connectors
        for expected in self.expected_connectors(owned):
            partition = partition_of(expected.encode(), self.settings.partitions)
            connectors.setdefault(partition, set()).add(expected)
        self.processor.keep_owned(owned)
        self.processor.schedule_outages(scan.outages)
        self.graces.give(connectors, now)  # in the background, after the worker is ready
        log.info(
            "partitions %s assigned: %d connectors; table scan %.1fs, log ahead and checkpoints"
            " %.1fs",
            sorted(owned),
            sum(len(c) for c in connectors.values()),
            scanned - began,
            time.monotonic() - scanned,
        )

    async def read_log_ahead(self, owned: set[int], scan: OwnedState) -> None:
        """Crash repair: the audit events written after each owned partition's recorded
        position, by inputs whose state did not reach the table, sorted as `LogAhead` says
        (logahead.py): kept for the next input of a connector the table holds, or folded
        into a new state for one it has never seen, written with the partition's next
        batch. So what is held follows the connectors, not the length of a history, and
        what a start repairs is written, not repeated by the next start. A long read runs
        in a process of its own (repair_process.py)."""
        positions = {p: scan.checkpoints.get(p, 0) for p in owned}
        self.checkpoints.positions = positions
        self.processor.drop_repairs()
        ahead = LogAhead(
            heads=scan.heads,
            stored=scan.connectors,
            inputs_topic=self.settings.inputs_topic,
            next_offsets=self.next_offsets,
        )
        self.processor.logged_ahead = ahead.logged_ahead
        if not owned:
            return
        ends = await audit_ends(self.settings, owned)
        events = sum(max(0, ends[p] - positions[p]) for p in owned)
        in_child_from = self.settings.repair_in_child_from
        if in_child_from and events >= in_child_from:
            folder = self.settings.worker_state_dir / "repairs"
            found = await repair_in_child(
                self.settings, folder, positions, ends, ahead, stopping=self.stopping
            )
            if found is not None:
                self._take_found(found, scan)
                self._said(sum(f.remaining for f in found.files.values()), found.skipped)
                return
            if self.stopping():
                log.info("crash repair left unfinished: the worker is stopping")
                return
        read = await read_ahead(
            self.settings, self.registry, positions, ends, ahead, stopping=self.stopping
        )
        if read is None:
            log.info("crash repair left unfinished: the worker is stopping")
            return  # nothing of it was written: the next start reads it again
        await self._hand_over(ahead.repaired, scan)
        self._said(len(ahead.repaired), ahead.skipped)

    def _take_found(self, found: FoundAhead, scan: OwnedState) -> None:
        """What the child found, as `_hand_over` hands what the worker folds itself."""
        self.checkpoints.positions.update(found.positions)
        self.processor.logged_ahead.update(found.logged_ahead)
        self.processor.repair_files = found.files
        for partition, heads in found.heads.items():
            scan.heads.setdefault(partition, {}).update(heads)
            scan.connectors.setdefault(partition, set()).update(heads)  # watched

    def _said(self, repaired: int, skipped: int) -> None:
        logged_ahead = self.processor.logged_ahead
        held = sum(len(events) for events in logged_ahead.values())
        if held or repaired:
            log.warning(
                "crash repair: the audit log is ahead of the state table: %d connectors"
                " folded forward from it, %d events kept for %d re-delivered inputs' connectors"
                " (%d events the table already held)",
                repaired,
                held,
                len(logged_ahead),
                skipped,
            )

    async def _hand_over(
        self, repaired: dict[str, tuple[ConnectorState, int]], scan: OwnedState
    ) -> None:
        """The states rebuilt from the log to the processor (written with each partition's
        next batch), their connectors watched, their chain heads known."""
        gc.freeze()  # the last of the states rebuilt: long-lived too
        for row, (state, partition) in enumerate(repaired.values(), 1):
            if not row % HANDED_OVER_SLICE:
                await asyncio.sleep(0)  # 322,000 states held the loop for ~1.5 s
            self.processor.repaired(partition, state, -1)  # no input of it applied here
            record = state.record
            scan.connectors.setdefault(partition, set()).add(record.connector_id)  # watched
            scan.heads.setdefault(partition, {})[record.connector_id] = pack_head(
                record.sequence, record.head_hash
            )

    def resume_offsets(self, owned: set[int], committed: dict[int, int]) -> None:
        """Kept for partitions this process owned before: Faust acks the events it skips as
        "from an old generation" during a rebalance (streams.py, `skipped_value`), and
        commits them, so after a second quick rebalance (a killed member's session expiring)
        the committed offset can be past inputs nobody applied. Our own next offset still
        points at them, and the first event past it makes the gap filler read them."""
        self.next_offsets = {
            p: self.next_offsets[p]
            if p in self._owned_before and p in self.next_offsets
            else committed[p]
            for p in owned
        }
        self._owned_before = owned

    async def committed_inputs(self, owned: set[int]) -> dict[int, int]:
        """Where the worker's group resumes each owned inputs partition: its committed
        offset, else the start of the log (the group's reset policy is earliest)."""
        if not owned:
            return {}
        tps = [TopicPartition(self.settings.inputs_topic, p) for p in sorted(owned)]
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        consumer = reader(self.settings)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.app_id)
            starts = await consumer.beginning_offsets(tps)
        finally:
            await consumer.stop()
            await admin.close()
        return {
            tp.partition: committed[tp].offset
            if tp in committed and committed[tp].offset >= 0
            else starts[tp]
            for tp in tps
        }

    def rebuild_heads(self, scan: OwnedState) -> None:
        """Chain heads: the table's (with the repaired states'), moved on by the events kept
        for re-delivered inputs."""
        heads = scan.heads
        for connector_id, events in self.processor.logged_ahead.items():
            partition = partition_of(connector_id.encode(), self.settings.partitions)
            last = events[-1]
            heads.setdefault(partition, {})[connector_id] = pack_head(last.sequence, last.hash)
        self.checkpoints.heads = heads

    def expected_connectors(self, owned: set[int]) -> set[str]:
        """The policy's expected connectors on owned partitions: watched even if silent."""
        return {
            expected
            for expected in self.policy.expected_connectors
            if partition_of(expected.encode(), self.settings.partitions) in owned
        }
