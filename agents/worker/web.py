"""The worker's web endpoints (/metrics, /status, /healthz) and the live projection they
serve, kept up by following the audit topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.records import decode_audit
from agents.worker.live import LiveProjection, exposition, metrics_registry

log = logging.getLogger("connector_recovery.worker")


def _view(page: Any) -> Any:
    """faust calls a function view as fun(view, request); a bound method needs a shim."""

    async def view(web: Any, request: Any) -> Any:
        return await page(web, request)

    view.__name__ = page.__name__
    return view


class WebEndpoints:
    """`inputs_lag`: inputs not yet applied on this worker's partitions, for /metrics."""

    def __init__(
        self,
        registry: SchemaRegistry,
        counters: dict[str, int],
        ready: asyncio.Event,
        inputs_lag: Callable[[], int],
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.ready = ready
        self.inputs_lag = inputs_lag
        self.live = LiveProjection()
        self.metrics = metrics_registry(self.live, counters)

    def register(self, app: Any) -> None:
        for path, page in (
            ("/metrics", self.metrics_page),
            ("/status", self.status_page),
            ("/healthz", self.healthz_page),
        ):
            app.page(path)(_view(page))

    async def observe_stream(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                self.live.apply(decode_audit(self.registry, event.value))
            except (AvroCodecError, ValidationError) as error:
                log.error(
                    "undecodable audit record at %s/%s: %s",
                    event.message.partition,
                    event.message.offset,
                    error,
                )

    async def metrics_page(self, web: Any, _request: Any) -> Any:
        self.counters["inputs_lag"] = self.inputs_lag()
        return web.bytes(exposition(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_page(self, web: Any, request: Any) -> Any:
        tenant = request.query.get("tenant")
        return web.json(self.live.status(tenant))

    async def healthz_page(self, web: Any, _request: Any) -> Any:
        ok = self.ready.is_set()
        return web.json({"ready": ok}, status=200 if ok else 503)
