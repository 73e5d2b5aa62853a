"""The chain heads a first start keys on ids of its own, re-keyed on the views' ids
(`AuditCheckpoints.share_ids`): in slices with the loop's turns between, keeping a head the
decider moves meanwhile."""

from __future__ import annotations

import asyncio

from agents.worker.checkpoints import SHARE_IDS_SLICE, AuditCheckpoints, pack_head

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
        await checkpoints.share_ids(views.__getitem__, 0)
        deciding.cancel()

    asyncio.run(run())
    heads = checkpoints.heads[0]
    assert turns >= 2  # the loop ran between the slices
    assert len(heads) == CONNECTORS
    assert all(key is views[key] for key in heads)
    assert heads[own[-1]] == moved
