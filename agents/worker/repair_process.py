"""A long crash repair in a process of its own.

A first start on a long history its table never saw (another cluster's table, a rebuilt
changelog) folds every connector's events into a new state: at 10 million events, 300,000
states built from millions of short-lived objects, which left the worker's heap ~160 MiB
larger for good (its arenas part-used) once the states were written. So when a start has
at least `Settings.repair_in_child_from` audit events ahead of its table
(`CR_REPAIR_IN_CHILD_FROM`, 200,000 by default; 0: never), the worker starts this child,
which reads them as the worker would (logahead.py), writes the states it folded to a file
per partition (repairfile.py) and the rest of what it found to `found.pickle`, and exits;
the worker writes the states to its table a chunk at a time from those files, with each
partition's first batch, as it writes those it folds itself.

Across the process boundary: the parent's first line on the child's stdin is the settings
and the folder (pickled: the child is this same code), and `asked.pickle` in that folder
holds what the table already has; the child answers with its progress (`{"read", "total",
"peak_rss_kb"}`) twice a second; it exits when its stdin closes (the parent stops, or died
even by SIGKILL), leaving nothing the next start would use; exit 0: `found.pickle` is
written. Else the worker reads the log ahead itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.children import cancel_all, child_main, parent_pipe, peak_rss_kb, spawn, stop
from agents.settings import Settings
from agents.worker.checkpoints import Head, pack_head
from agents.worker.logahead import LogAhead
from agents.worker.repairfile import RepairFile, write_states
from streams.models import AuditEvent
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

STOP_TIMEOUT_S = 5.0  # a child told to stop exits at its next slice: well within this
REPORT_EVERY_S = 0.5
LOG_EVERY_S = 15.0  # a progress line in the worker's log
HEAD_SLICE = 10_000  # folded states' heads the worker reads back between two turns


@dataclass
class FoundAhead:
    """What the child found: as `LogAhead`, with the folded states on disk."""

    positions: dict[int, int]  # moved to the ends it read to
    logged_ahead: dict[str, list[AuditEvent]]
    heads: dict[int, dict[str, Head]]  # of the folded states, per partition
    files: dict[int, RepairFile]
    skipped: int


async def repair_in_child(
    settings: Settings,
    folder: Path,
    positions: dict[int, int],
    ends: dict[int, int],
    ahead: LogAhead,
    *,
    stopping: Callable[[], bool],
) -> FoundAhead | None:
    """The child run to its end: what it found, or None (it failed, or `stopping` said so
    first: the caller tells which)."""
    _ask(
        folder,
        {
            "positions": positions,
            "ends": ends,
            "heads": ahead.heads,
            "stored": ahead.stored,
            "next_offsets": ahead.next_offsets,
        },
    )
    handshake = {"settings": settings, "folder": folder, "loglevel": log.getEffectiveLevel()}
    process = await spawn("agents.worker.repair_process", handshake)
    assert process.stdout is not None  # noqa: S101 - piped by spawn
    total = sum(max(0, ends[p] - positions[p]) for p in positions)
    log.info(
        "crash repair: %s audit events ahead of the state table, read in a process of its"
        " own (pid %d)",
        f"{total:,}",
        process.pid,
    )
    began = logged = time.monotonic()
    peak_rss = 0
    try:
        reading = asyncio.ensure_future(process.stdout.readline())
        while True:
            done, _ = await asyncio.wait({reading}, timeout=REPORT_EVERY_S)
            if stopping():
                reading.cancel()
                return None
            if not done:
                continue
            line = reading.result()
            if not line:
                break
            reported = json.loads(line)
            peak_rss = reported["peak_rss_kb"]
            if time.monotonic() - logged >= LOG_EVERY_S:
                logged = time.monotonic()
                log.info(
                    "crash repair: %s of %s events read", f"{reported['read']:,}", f"{total:,}"
                )
            reading = asyncio.ensure_future(process.stdout.readline())
        code = await process.wait()
    finally:
        await stop(process, STOP_TIMEOUT_S)
    if code != 0:
        log.warning("crash repair: its process stopped (exit %d); the worker reads instead", code)
        return None
    found, heads = await _read_found(folder)
    log.warning(  # as loud as the line that says what the repair folded forward
        "crash repair: read in a process of its own in %.1fs (its peak RSS %d MiB)",
        time.monotonic() - began,
        peak_rss // 1024,
    )
    return FoundAhead(
        positions=found["positions"],
        logged_ahead=found["logged_ahead"],
        heads=heads,
        files={p: RepairFile(folder / f"{p}.states", n) for p, n in found["counts"].items()},
        skipped=found["skipped"],
    )


def _ask(folder: Path, asked: dict[str, Any]) -> None:
    """A clear folder (a stopped start's leftovers are of no use) with `asked.pickle`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with (folder / "asked.pickle").open("wb") as out:
        pickle.dump(asked, out, protocol=pickle.HIGHEST_PROTOCOL)


async def _read_found(folder: Path) -> tuple[dict[str, Any], dict[int, dict[str, Head]]]:
    """`found.pickle`: what the child found, then the folded states' heads in slices, each
    read in a turn of the loop of its own (300,000 heads in one piece held it ~200 ms)."""
    heads: dict[int, dict[str, Head]] = {}
    with (folder / "found.pickle").open("rb") as found_file:
        found: dict[str, Any] = pickle.load(found_file)  # noqa: S301 - our own child's, in our own folder
        for _slice in range(found["head_slices"]):
            await asyncio.sleep(0)
            partition, part = pickle.load(found_file)  # noqa: S301 - as above
            heads.setdefault(partition, {}).update(part)
    (folder / "found.pickle").unlink()
    (folder / "asked.pickle").unlink()
    return found, heads


# -- the child ---------------------------------------------------------------------------------


def _write_found(ahead: LogAhead, positions: dict[int, int], folder: Path) -> None:
    """The folded states to a file per partition; what else the child found, then the
    states' heads in slices, to `found.pickle` (`_read_found`)."""
    # Imported here: only the child writes stored states.
    from agents.worker.statecodec import dump_state  # noqa: PLC0415

    by_partition: dict[int, list[ConnectorState]] = {}
    for state, partition in ahead.repaired.values():
        by_partition.setdefault(partition, []).append(state)
    counts = {
        partition: write_states(
            folder / f"{partition}.states",
            ((s.record.connector_id.encode(), dump_state(s, -1)) for s in states),
        )
        for partition, states in by_partition.items()
    }
    head_slices = [
        (
            partition,
            {
                s.record.connector_id: pack_head(s.record.sequence, s.record.head_hash)
                for s in states[start : start + HEAD_SLICE]
            },
        )
        for partition, states in by_partition.items()
        for start in range(0, len(states), HEAD_SLICE)
    ]
    found = {
        "positions": positions,
        "logged_ahead": ahead.logged_ahead,
        "counts": counts,
        "skipped": ahead.skipped,
        "head_slices": len(head_slices),
    }
    with (folder / "found.pickle").open("wb") as out:
        pickle.dump(found, out, protocol=pickle.HIGHEST_PROTOCOL)
        for head_slice in head_slices:
            pickle.dump(head_slice, out, protocol=pickle.HIGHEST_PROTOCOL)


async def _serve() -> int:
    stdin, handshake = await parent_pipe()
    if handshake is None:
        return 0  # the parent was gone before it said anything
    logging.basicConfig(
        level=handshake["loglevel"],
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    # Imported here: the parent's side needs none of the read's code.
    from agents.wire.codec import registry  # noqa: PLC0415
    from agents.worker.logahead import read_ahead  # noqa: PLC0415

    settings: Settings = handshake["settings"]
    folder: Path = handshake["folder"]
    with (folder / "asked.pickle").open("rb") as asked_file:
        asked: dict[str, Any] = pickle.load(asked_file)  # noqa: S301 - our own parent's, in its folder
    positions: dict[int, int] = asked["positions"]
    began = dict(positions)
    total = sum(max(0, asked["ends"][p] - positions[p]) for p in positions)
    ahead = LogAhead(
        heads=asked["heads"],
        stored=asked["stored"],
        inputs_topic=settings.inputs_topic,
        next_offsets=asked["next_offsets"],
    )
    parent_gone = asyncio.create_task(stdin.read())  # the parent writes nothing more: EOF

    def report_once() -> None:
        read = sum(positions[p] - began[p] for p in positions)
        report = {"read": read, "total": total, "peak_rss_kb": peak_rss_kb()}
        sys.stdout.buffer.write(json.dumps(report).encode() + b"\n")
        sys.stdout.buffer.flush()

    async def report() -> None:
        while True:
            report_once()
            await asyncio.sleep(REPORT_EVERY_S)

    reporting = asyncio.create_task(report())
    try:
        read = await read_ahead(
            settings, registry(), positions, asked["ends"], ahead, stopping=parent_gone.done
        )
        if read is None:
            return 0  # told to stop: nothing the parent would use
        _write_found(ahead, positions, folder)
        report_once()  # its peak, writing included
        return 0
    except Exception:
        log.exception("crash repair: its own process stopped")
        return 1
    finally:
        await cancel_all(reporting, parent_gone)


def main() -> int:
    return child_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
