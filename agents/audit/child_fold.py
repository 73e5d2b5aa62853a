"""A long fold of the audit topic into the live views, in a process of its own.

A first start on a long history (no snapshot yet) folds every event of the topic: 10
million take minutes of a core. In the process that follows the topic, that fold shares the
event loop with whatever else runs there (a worker's crash repair, its decisions and
heartbeats, the admin page's answers) and makes both slower. So when a start has at least
`Settings.views_fold_in_child_from` events to fold (`CR_VIEWS_FOLD_IN_CHILD_FROM`, 200,000
by default; 0: never), the follower (follow.py) starts this child, which folds from the
snapshot, if any, to the topic's end as it was when it began, writes the snapshot and the
timeline index, and exits; the follower then restores that snapshot, as a restart does,
and folds the tail.

Across the process boundary, as lines over the child's stdin/stdout:

- the parent's first line is the settings and the views' folder (pickled: the child is this
  same code); it writes nothing more;
- the child answers with its progress (`{"read", "total", "undecodable"}`), twice a second;
- the child exits when its stdin closes (the parent stops or died, even by SIGKILL),
  without a snapshot: the next start folds again;
- exit 0: the snapshot is written; else the parent folds itself, from where it is.

The child ignores SIGINT and SIGTERM (a signal to the process group reaches it too): only
its parent decides when it stops. It logs to the inherited stderr, into its parent's log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agents.children import cancel_all, child_main, parent_pipe, peak_rss_kb, spawn, stop
from agents.settings import Settings

if TYPE_CHECKING:
    from agents.audit.follow import FollowProgress

log = logging.getLogger("connector_recovery.views")

STOP_TIMEOUT_S = 5.0  # a child told to stop exits at its next slice: well within this


async def fold_in_child(settings: Settings, views_dir: Path, progress: FollowProgress) -> int:
    """Run the child to its end: its exit code. `progress` follows the child's reports."""
    handshake = {
        "settings": settings,
        "views_dir": views_dir,
        "loglevel": log.getEffectiveLevel(),
    }
    process = await spawn("agents.audit.child_fold", handshake)
    assert process.stdout is not None  # noqa: S101 - piped by spawn
    log.info("audit views: folding in a process of their own (pid %d)", process.pid)
    began = time.monotonic()
    peak_rss_kb = 0
    try:
        while line := await process.stdout.readline():
            reported = json.loads(line)
            progress.read = reported["read"]
            progress.total = reported["total"]
            progress.undecodable = reported["undecodable"]
            peak_rss_kb = reported["peak_rss_kb"]
        code = await process.wait()
    finally:
        await stop(process, STOP_TIMEOUT_S)
    if code == 0:  # as loud as the lines that said the views are incomplete until then
        log.warning(
            "audit views: %s events folded in a process of their own in %.1fs (its peak RSS"
            " %d MiB)",
            f"{progress.read:,}",
            time.monotonic() - began,
            peak_rss_kb // 1024,
        )
    return code


# -- the child ---------------------------------------------------------------------------------


def _report(progress: FollowProgress) -> None:
    line = {
        "read": progress.read,
        "total": progress.total,
        "undecodable": progress.undecodable,
        "peak_rss_kb": peak_rss_kb(),
    }
    sys.stdout.buffer.write(json.dumps(line).encode() + b"\n")
    sys.stdout.buffer.flush()


async def _serve() -> int:
    stdin, handshake = await parent_pipe()
    if handshake is None:
        return 0  # the parent was gone before it said anything
    logging.basicConfig(
        level=handshake["loglevel"],
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    # Imported here: the parent's side needs none of the fold's code.
    from agents.audit.follow import AuditFollower  # noqa: PLC0415 - the child alone folds

    follower = AuditFollower(handshake["settings"], handshake["views_dir"])
    follower.said_why = True  # the parent did: why there is no snapshot, how many to fold
    folding = asyncio.create_task(follower.fold_to_end(_report))
    parent_gone = asyncio.create_task(stdin.read())  # the parent writes nothing more: EOF
    try:
        await asyncio.wait({folding, parent_gone}, return_when=asyncio.FIRST_COMPLETED)
        if not folding.done():
            return 0  # told to stop: no snapshot of half a fold
        folding.result()  # raises what stopped it
        return 0
    except Exception:
        log.exception("audit views: the fold's own process stopped")
        return 1
    finally:
        await cancel_all(folding, parent_gone)


def main() -> int:
    return child_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
