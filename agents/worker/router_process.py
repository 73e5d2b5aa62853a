"""The router (router.py) in a process of its own, so routing and deciding each get a core.

Measured on the 2-core machine (BENCHMARKS.md, P1): the router's decoding and producing
and the decider's shared one event loop, and moving the router out of the worker's process
took one worker from ~18,000 to ~28,000 pings/s. The router is stateless and keeps its own
consumer group, so nothing but two things cross the process boundary, as JSON lines over
the child's stdin/stdout:

- the worker asks `{"front": now}` on each clock tick; the child answers with the inputs
  front (router.py, `Router.front`) and its counters (dead letters, skipped redeliveries),
  which the worker adds to its own for /metrics;
- the child exits when its stdin closes (the worker died, even by SIGKILL, or is stopping:
  the child then commits what is acked, router.py); the worker starts a new child when
  one exits while the worker runs (e.g. its producer failed across a broker restart),
  never while it stops, and stops when that keeps happening (a worker that no longer
  routes must not look healthy).

The child ignores SIGINT and SIGTERM: a signal to the whole process group (Ctrl-C in a
terminal, `systemctl stop`) reaches it as well as the worker, and only the worker decides
when its router stops.

The first line the worker writes is the settings (pickled: the child is this same code).
The child logs to the inherited stderr, into the worker's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agents.children import child_main, parent_pipe, spawn, stop
from agents.settings import Settings

log = logging.getLogger("connector_recovery.router")

FRONT_TIMEOUT_S = 5.0  # an answer later than this is no answer: the clock waits a tick
# For the child to commit what is acked, stop its consumer (and leave its group): within
# it, a worker told to stop exits in well under 10 s.
STOP_TIMEOUT_S = 6.0
RESTARTS, RESTART_WINDOW_S = 5, 300.0  # this many exits within the window stop the worker
RESTART_DELAY_S = 1.0
# Batches of a whole poll; a short linger, since a poll's acks gate its commit.
ROUTER_PRODUCER: dict[str, Any] = {"linger_ms": 2, "max_batch_size": 262_144}


class RouterStopped(RuntimeError):
    """The router process kept exiting while the worker runs."""


class RouterProcess:
    """The worker's side: start the child, ask it for the front, restart it when it exits
    (it is stateless: a new one reads back what the last one forwarded, router.py), and
    stop the worker when it exits RESTARTS times within RESTART_WINDOW_S. `stopping` says
    whether the worker is stopping: a child that exits then is not replaced."""

    def __init__(
        self,
        settings: Settings,
        loglevel: str,
        counters: dict[str, int],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.stopping = stopping
        self.loglevel = loglevel
        self.counters = counters  # the child's counters are added to these
        self._reported: dict[str, int] = {}  # the running child's, as last added
        self._process: asyncio.subprocess.Process | None = None
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._asking = asyncio.Lock()

    async def run(self) -> None:
        """Run the child until cancelled (the child is stopped) or the worker stops,
        restarting it when it exits; RouterStopped when it exits too often."""
        exits: deque[float] = deque(maxlen=RESTARTS)
        while not self.stopping():
            code = await self._run_once()
            if self.stopping():
                return
            exits.append(time.monotonic())
            if len(exits) == RESTARTS and exits[-1] - exits[0] < RESTART_WINDOW_S:
                raise RouterStopped(
                    f"the router process exited {RESTARTS} times in {RESTART_WINDOW_S:.0f} s"
                    f" (last with code {code}); its log lines above say why"
                )
            log.warning("the router process exited with code %s; starting a new one", code)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _run_once(self) -> int:
        """One child, from start to exit: its exit code."""
        handshake = {"settings": self.settings, "loglevel": self.loglevel}
        process = await spawn("agents.worker.router_process", handshake)
        self._process = process
        self._reported = {}
        assert process.stdout is not None  # noqa: S101 - piped by spawn
        try:
            while line := await process.stdout.readline():
                self._answers.put_nowait(json.loads(line))
            return await process.wait()
        finally:
            self._process = None
            await stop(process, STOP_TIMEOUT_S)

    async def front(self, now: int) -> int | None:
        """The inputs front (router.py `Router.front`), or None when the child cannot say
        now (starting, rebalancing, slow): the clock then waits for the next tick."""
        process = self._process
        if process is None or process.stdin is None:
            return None
        async with self._asking:
            while not self._answers.empty():  # answers to questions that timed out
                self._answers.get_nowait()
            try:
                process.stdin.write(json.dumps({"front": now}).encode() + b"\n")
                await process.stdin.drain()
                answer = await asyncio.wait_for(self._answers.get(), FRONT_TIMEOUT_S)
            except (TimeoutError, ConnectionError):
                return None
        self._count(answer["counters"])
        front: int | None = answer["front"]
        return front

    def _count(self, reported: dict[str, int]) -> None:
        for name, value in reported.items():
            self.counters[name] = self.counters.get(name, 0) + value - self._reported.get(name, 0)
        self._reported = dict(reported)


# -- the child ---------------------------------------------------------------------------------


async def _serve() -> int:
    stdin, handshake = await parent_pipe()
    if handshake is None:
        return 0  # the worker was gone before it said anything
    settings: Settings = handshake["settings"]
    logging.basicConfig(
        level=handshake["loglevel"].upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )

    # Imported here: the worker's side needs none of Kafka's client code.
    from agents.broker.producer import open_producer  # noqa: PLC0415 - the router process alone loads the Kafka client (above)
    from agents.wire.codec import registry  # noqa: PLC0415 - as above
    from agents.worker import heap  # noqa: PLC0415 - as above
    from agents.worker.router import Router  # noqa: PLC0415 - as above

    counters = {"dead_letters": 0, "router_skipped_forwarded": 0}
    router = Router(settings, registry(), counters)
    producer = await open_producer(settings, **ROUTER_PRODUCER)
    heap.settle()
    routing = asyncio.create_task(router.run(producer))
    try:
        while True:
            reading = asyncio.ensure_future(stdin.readline())
            await asyncio.wait({reading, routing}, return_when=asyncio.FIRST_COMPLETED)
            if routing.done():
                reading.cancel()
                routing.result()  # raises what stopped it
                return 1
            line = reading.result()
            if not line:  # the worker is gone or stopping us
                router.stop()
                # A second before the worker would kill us: then the rest is cancelled.
                await asyncio.wait({routing}, timeout=STOP_TIMEOUT_S - 1)
                if routing.done():
                    routing.result()  # raises what stopped it
                return 0
            now = json.loads(line)["front"]
            answer = {"front": await router.front(now), "counters": counters}
            sys.stdout.buffer.write(json.dumps(answer).encode() + b"\n")
            sys.stdout.buffer.flush()
    except Exception:
        log.exception("the router stopped")
        return 1
    finally:
        routing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await routing
        await producer.stop()


def main() -> int:
    return child_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
