"""Processes of this same code that a worker or the page starts beside itself (the router,
the views' first fold), and how both sides of one speak: the parent's first line on the
child's stdin is a pickled handshake (the child is this same code, over a pipe only the
parent holds); the child exits when its stdin closes (the parent stops, or died even by
SIGKILL) and ignores SIGINT and SIGTERM, which reach the whole process group: only its
parent decides when it stops."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pickle
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


async def spawn(module: str, handshake: dict[str, Any]) -> asyncio.subprocess.Process:
    """`python -m module`, its stdin and stdout piped, the handshake written."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None  # noqa: S101 - PIPE above
    process.stdin.write(base64.b64encode(pickle.dumps(handshake)) + b"\n")
    return process


async def stop(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Close its stdin (the cue to stop), wait up to `timeout_s`, then kill it."""
    if process.returncode is not None:
        return
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def parent_pipe() -> tuple[asyncio.StreamReader, dict[str, Any] | None]:
    """The child's side: its stdin as a stream, and the handshake (None: the parent was
    gone before it said anything)."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    first = await stdin.readline()
    if not first:
        return stdin, None
    handshake: dict[str, Any] = pickle.loads(base64.b64decode(first))  # noqa: S301 - our own parent, over a pipe only it holds
    return stdin, handshake


def child_main(serve: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """A child's `main`: signals to the group ignored, `serve` run to its exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return 0


def peak_rss_kb() -> int:
    """This process's peak resident memory (a child reports it to its parent's log)."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) if found else 0


async def cancel_all(*tasks: asyncio.Task[Any]) -> None:
    """A child's own tasks cancelled and awaited as it exits, whatever each ended with."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
