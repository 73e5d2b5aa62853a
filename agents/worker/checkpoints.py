"""Audit checkpoints: per owned audit partition, the heads of its hash chains, digested and
chained on the checkpoints topic; and the audit position (next offset) recorded in the
table beside the states, where crash repair starts reading (agents/worker/recovery.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiokafka.structs import TopicPartition

from agents.broker.client import reader
from agents.settings import Settings
from agents.wire.codec import SingleObjectCodec
from agents.worker.heldids import rekey_between_turns
from streams.checkpoint import HeadsDigest, checkpoint_record
from streams.models import GENESIS_HASH, AuditEvent

CHECKPOINT_PREFIX = b"\x00audit-position:"
DIGEST_SLICE = 10_000  # chain heads digested between two turns (~7 ms)


# A chain head (sequence, head hash) as 40 bytes (8 of sequence, 32 of digest): a worker
# holds one per connector it owns, 73 bytes each rather than ~200 as a tuple of an int and a
# hex string. A head that does not fit (not a SHA-256 hex digest) stays a tuple.
Head = bytes | tuple[int, str]


def pack_head(sequence: int, head_hash: str) -> Head:
    if 0 <= sequence < 1 << 64 and len(head_hash) == 64:
        try:
            return sequence.to_bytes(8, "big") + bytes.fromhex(head_hash)
        except ValueError:
            pass
    return sequence, head_hash


def unpack_head(head: Head) -> tuple[int, str]:
    if isinstance(head, tuple):
        return head
    return int.from_bytes(head[:8], "big"), head[8:].hex()


def head_sequence(head: Head) -> int:
    return head[0] if isinstance(head, tuple) else int.from_bytes(head[:8], "big")


class Heads(Mapping[str, tuple[int, str]]):
    """A partition's packed heads, read as (sequence, head hash) (`heads_digest`)."""

    def __init__(self, packed: dict[str, Head]) -> None:
        self.packed = packed

    def __getitem__(self, connector_id: str) -> tuple[int, str]:
        return unpack_head(self.packed[connector_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self.packed)

    def __len__(self) -> int:
        return len(self.packed)


def checkpoint_key(partition: int) -> bytes:
    """Per-partition table key (never a connector id: those are non-empty text)."""
    return CHECKPOINT_PREFIX + str(partition).encode()


def partition_of_checkpoint_key(key: bytes) -> int | None:
    if not key.startswith(CHECKPOINT_PREFIX):
        return None
    return int(key[len(CHECKPOINT_PREFIX) :])


class AuditCheckpoints:
    def __init__(self) -> None:
        # Per audit partition: the next audit offset, and the chain heads below it.
        self.positions: dict[int, int] = {}
        self.heads: dict[int, dict[str, Head]] = {}
        # What was last checkpointed, per partition (read back at assignment).
        self.checkpointed: dict[int, int] = {}
        self.previous: dict[int, str] = {}

    def written(self, events: Iterable[tuple[AuditEvent, int]], offsets: Iterable[int]) -> None:
        """Audit events the broker acked, with their offsets. Positions and chain heads
        move together (no await in between): a checkpoint taken at any moment describes
        exactly the log below its position."""
        for (event, partition), offset in zip(events, offsets, strict=True):
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
            self.heads.setdefault(partition, {})[event.connector_id] = pack_head(
                event.sequence, event.hash
            )

    async def share_ids(self, held: Callable[[str], str]) -> None:
        """Every partition's heads keyed on the ids as the process holds them elsewhere
        (`held`): one object per id, not one per structure. In slices, with the loop's
        turns between them (a partition of 80,000 took up to ~200 ms), so a head the
        decider moves meanwhile is kept."""
        for partition in list(self.heads):
            heads = self.heads[partition]
            moved = await rekey_between_turns(heads, held)
            if moved and self.heads.get(partition) is heads:
                self.heads[partition] = dict(heads)

    async def due(self, owned: Iterable[int], now: int) -> list[dict[str, Any]]:
        """A checkpoint record per owned audit partition whose log grew since the last.
        Each partition's position and heads are copied in one turn of the loop (together
        they describe the log below the position); the copy is digested in slices, with
        the loop's turns between them (a worker owning 300,000 chains held the loop ~430 ms
        digesting them in one piece)."""
        records = []
        for partition in sorted(owned):
            position = self.positions.get(partition, 0)
            if position == self.checkpointed.get(partition) or partition not in self.heads:
                continue
            heads = Heads(dict(self.heads[partition]))
            digest = HeadsDigest(heads)
            digest.update(DIGEST_SLICE)
            while not digest.done:
                await asyncio.sleep(0)
                digest.update(DIGEST_SLICE)
            records.append(
                checkpoint_record(
                    partition,
                    position,
                    len(heads),
                    digest.hexdigest(),
                    written_at=now,
                    prev_hash=self.previous.get(partition, GENESIS_HASH),
                )
            )
        return records

    def sent(self, record: dict[str, Any]) -> None:
        self.checkpointed[record["partition"]] = record["end_offset"]
        self.previous[record["partition"]] = record["hash"]

    async def read_last(self, settings: Settings, codec: SingleObjectCodec) -> None:
        """The last checkpoint of every partition, from the checkpoints topic."""
        consumer = reader(settings)
        await consumer.start()
        try:
            tp = TopicPartition(settings.topics.checkpoints, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    for record in records:
                        self.sent(codec.decode(record.value))
        finally:
            await consumer.stop()
