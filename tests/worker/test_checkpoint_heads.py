"""The chain heads a first start keys on ids of its own, re-keyed on the views' ids
(`AuditCheckpoints.share_ids`), and digested for a checkpoint (`AuditCheckpoints.due`): in
slices with the loop's turns between, keeping or ignoring what the decider moves meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.worker.checkpoints import DIGEST_SLICE, AuditCheckpoints, pack_head
from agents.worker.heldids import SHARE_IDS_SLICE
from streams.checkpoint import heads_digest

CONNECTORS = SHARE_IDS_SLICE * 2 + 1


def test_heads_are_re_keyed_in_slices_and_keep_what_moved_meanwhile() -> None:
    own = [f"C-{index}" for index in range(CONNECTORS)]
    views = {connector: "".join(connector) for connector in own}  # equal, other objects
    checkpoints = AuditCheckpoints()
    checkpoints.heads[0] = {connector: pack_head(1, "0" * 64) for connector in own}
    moved = pack_head(2, "f" * 64)
    turns = 0

    async def decider() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1
            checkpoints.heads[0][own[-1]] = moved  # a later event of the last connector

    async def run() -> None:
        deciding = asyncio.create_task(decider())
        await asyncio.sleep(0)
        await checkpoints.share_ids(views.__getitem__)
        deciding.cancel()

    asyncio.run(run())
    heads = checkpoints.heads[0]
    assert turns >= 2  # the loop ran between the slices
    assert len(heads) == CONNECTORS
    assert all(key is views[key] for key in heads)
    assert heads[own[-1]] == moved


def test_a_checkpoint_digests_the_heads_of_its_position_in_slices() -> None:
    own = [f"C-{index}" for index in range(DIGEST_SLICE * 2 + 1)]
    checkpoints = AuditCheckpoints()
    checkpoints.heads[0] = {connector: pack_head(1, "0" * 64) for connector in own}
    checkpoints.positions[0] = len(own)
    at_position = {connector: (1, "0" * 64) for connector in own}
    turns = 0

    async def decider() -> None:
        nonlocal turns
        while True:  # from the first turn `due` gives the loop
            turns += 1
            # a later event of the last connector, past the position being checkpointed
            checkpoints.heads[0][own[-1]] = pack_head(1 + turns, "f" * 64)
            checkpoints.positions[0] += 1
            await asyncio.sleep(0)

    async def run() -> list[dict[str, Any]]:
        deciding = asyncio.create_task(decider())
        records = await checkpoints.due([0], now=1)
        deciding.cancel()
        return records

    [record] = asyncio.run(run())
    assert turns >= 2  # the loop ran between the three slices
    assert record["end_offset"] == len(own)
    assert record["connectors"] == len(own)
    assert record["heads_sha256"] == heads_digest(at_position)
    checkpoints.sent(record)
    assert asyncio.run(checkpoints.due([0], now=2))[0]["end_offset"] > len(own)
