"""Heartbeat graces: a `Watch` for every connector of a new assignment, sent after it.

A new owner knows nothing of its connectors' liveness (it is kept in memory only), so each
gets a heartbeat grace: a `Watch` input, whose deadline is at least `at + timeout` (a max:
the order against the connector's own pings does not matter). They are sent in the
background once the worker is ready, not before: at a million connectors they took 63 s
one record each, all of it in a fresh worker's time to ready while its consumer was paused.
They travel as the router's `InputBatch` records (up to BATCH_ITEMS per inputs partition),
so the decider pays Faust's per-event cost once per batch, not once per connector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed

from agents.settings import Settings
from agents.wire.codec import SchemaRegistry
from agents.wire.records import input_record
from agents.worker.router import BATCH_ITEMS
from streams.models import Watch

log = logging.getLogger("connector_recovery.graces")

GRACE_SOURCE = "grace"  # the `sources` entry of a grace in an InputBatch: no external record


class Graces:
    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistry,
        producer: Callable[[], Awaitable[AIOKafkaProducer]],
        crash: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.watch_codec = registry.codec("Watch")
        self.batch_codec = registry.codec("InputBatch")
        self.producer = producer
        self.crash = crash
        self._sending: asyncio.Task[None] | None = None

    def give(self, connectors: dict[int, set[str]], at: int) -> None:
        """Start sending graces for `connectors` (per inputs partition); a newer assignment
        replaces an older one still being sent (it names every connector owned now)."""
        if self._sending is not None:
            self._sending.cancel()
        self._sending = asyncio.ensure_future(self._send(connectors, at))

    async def _send(self, connectors: dict[int, set[str]], at: int) -> None:
        began = time.monotonic()
        try:
            producer = await self.producer()
            pending = []
            for partition, unordered in sorted(connectors.items()):
                owned = sorted(unordered)
                for start in range(0, len(owned), BATCH_ITEMS):
                    # One InputBatch at a time, yielding in between: the worker's own start
                    # (seeking, fetching, deciding) goes on while a million graces go out.
                    await asyncio.sleep(0)
                    pending.append(
                        await producer.send(
                            self.settings.inputs_topic,
                            value=self._batch(owned[start : start + BATCH_ITEMS], at),
                            partition=partition,
                        )
                    )
            await asyncio.gather(*pending)
        except asyncio.CancelledError:
            raise
        except ProducerClosed:
            # The worker is stopping (SIGTERM while a large assignment's graces go out): the
            # next owner gives its own; nothing is lost and nothing is wrong.
            log.info("heartbeat graces: the worker stopped before all were sent")
            return
        except Exception as error:
            # A connector without a grace is never found missing: stop the worker, loudly.
            log.exception("the heartbeat graces were not sent")
            await self.crash(error)
            raise
        log.info(
            "heartbeat graces sent for %d connectors in %.1fs",
            sum(len(owned) for owned in connectors.values()),
            time.monotonic() - began,
        )

    def _batch(self, connectors: list[str], at: int) -> bytes:
        items = [
            self.watch_codec.encode(input_record(Watch(connector_id=connector_id, at=at)))
            for connector_id in connectors
        ]
        return self.batch_codec.encode({"items": items, "sources": [GRACE_SOURCE] * len(items)})
