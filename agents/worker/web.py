"""The worker's web endpoints (/metrics, /status, /healthz) and the live views they serve:
the whole audit topic, followed from the views' last snapshot (agents/audit/follow.py), so a
restarted worker, or one owning other partitions, shows what a replay shows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from agents.audit.follow import AuditFollower
from agents.audit.live import (
    STATUS_PAGE,
    STATUS_PAGE_MAX,
    exposition,
    metrics_registry,
    status,
)


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
        follower: AuditFollower,
        counters: dict[str, int],
        ready: asyncio.Event,
        inputs_lag: Callable[[], int],
    ) -> None:
        self.counters = counters
        self.ready = ready
        self.inputs_lag = inputs_lag
        self.follower = follower
        self.metrics = metrics_registry(lambda: follower.view, counters)

    def register(self, app: Any) -> None:
        for path, page in (
            ("/metrics", self.metrics_page),
            ("/status", self.status_page),
            ("/healthz", self.healthz_page),
        ):
            app.page(path)(_view(page))

    async def follow_audit(self) -> None:
        await self.follower.run()

    async def metrics_page(self, web: Any, _request: Any) -> Any:
        self.counters["inputs_lag"] = self.inputs_lag()
        return web.bytes(exposition(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_page(self, web: Any, request: Any) -> Any:
        query = request.query
        try:
            limit = int(query.get("limit", STATUS_PAGE))
        except ValueError:
            limit = 0
        if not 1 <= limit <= STATUS_PAGE_MAX:
            problem = f"limit must be a whole number from 1 to {STATUS_PAGE_MAX}"
            return web.json({"error": problem}, status=400)
        page = status(
            self.follower.view, query.get("tenant"), limit=limit, after=query.get("after")
        )
        return web.json(page)

    async def healthz_page(self, web: Any, _request: Any) -> Any:
        processing, views = self.ready.is_set(), self.follower.caught_up.is_set()
        ok = processing and views
        body = {"ready": ok, "processing": processing, "views_caught_up": views}
        return web.json(body, status=200 if ok else 503)
