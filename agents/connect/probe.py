"""`connector-recovery probe kafka-connect`: watch a Kafka Connect cluster, publish pings.

Every `--interval` seconds: `GET {url}/connectors?expand=status&expand=info`, one verdict per
connector (agents/connect/status.py), its offsets from `GET {url}/connectors/{name}/offsets`
(KIP-875) as the ping's `position`, and one Avro `HealthPing` per connector to the health
topic. When Connect does not answer the probe publishes nothing (the heartbeat rule notices
the silence), logs one line per outage and reports it on its own `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from agents.broker.producer import open_producer
from agents.connect.status import Memory, assess, gone
from agents.settings import Settings
from agents.wire.codec import registry
from streams.models import HealthPing

log = logging.getLogger("connector_recovery.probe")


class ProbeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.up = Gauge(
            "probe_up",
            "1 when the last check reached the Kafka Connect REST API",
            [],
            registry=self.registry,
        )
        self.checks = Counter("probe_checks", "checks attempted", registry=self.registry)
        self.errors = Counter(
            "probe_errors", "checks or publications that failed", registry=self.registry
        )
        self.last_success = Gauge(
            "probe_last_success_timestamp_seconds",
            "when a check last reached Kafka Connect and published its pings",
            registry=self.registry,
        )
        self.pings = Counter("probe_pings", "health pings published", registry=self.registry)
        self.connectors = Gauge(
            "probe_connectors", "connectors listed at the last check", registry=self.registry
        )

    def page(self) -> bytes:
        return bytes(generate_latest(self.registry))


class ConnectUnreachable(Exception):
    """The REST API did not answer (or answered with something that is not its status)."""


@dataclass
class ConnectProbe:
    settings: Settings
    url: str
    interval_s: float = 10.0
    tenant_key: str = "tenant"
    grace_s: float = 60.0
    metrics: ProbeMetrics = field(default_factory=ProbeMetrics)
    memory: dict[str, Memory] = field(default_factory=dict)
    outage_since: float | None = None

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    async def _get(self, session: aiohttp.ClientSession, path: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=max(2.0, min(10.0, self.interval_s * 2)))
        async with session.get(f"{self.base}{path}", timeout=timeout) as response:
            if response.status != 200:
                raise ConnectUnreachable(f"GET {path} answered HTTP {response.status}")
            return await response.json()

    async def _position(self, session: aiohttp.ClientSession, name: str) -> str | None:
        try:
            body = await self._get(session, f"/connectors/{quote(name, safe='')}/offsets")
        except (aiohttp.ClientError, TimeoutError, ConnectUnreachable, ValueError):
            return None  # deleted meanwhile, or a Connect older than KIP-875 (3.5)
        offsets = body.get("offsets") if isinstance(body, dict) else None
        return (
            json.dumps(offsets, sort_keys=True, separators=(",", ":"))
            if offsets is not None
            else None
        )

    async def check(self, session: aiohttp.ClientSession) -> list[HealthPing]:
        """One round: the pings to publish (raises ConnectUnreachable when Connect is down)."""
        started = time.monotonic()
        try:
            listing = await self._get(session, "/connectors?expand=status&expand=info")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise ConnectUnreachable(str(error) or type(error).__name__) from None
        if not isinstance(listing, dict):
            raise ConnectUnreachable("GET /connectors?expand=status did not answer a JSON object")
        latency_ms = round((time.monotonic() - started) * 1000)
        now_ms = time.time_ns() // 1_000_000
        for name in gone(set(self.memory), set(listing)):
            log.warning(
                "connector %s is no longer in Kafka Connect at %s: no more pings for it; "
                "`connector-recovery retire %s` keeps the heartbeat rule from flagging it",
                name,
                self.url,
                name,
            )
            del self.memory[name]
        assessments = [
            assess(
                name,
                entry,
                self.memory.get(name),
                now_ms,
                grace_ms=round(self.grace_s * 1000),
                tenant_key=self.tenant_key,
            )
            for name, entry in sorted(listing.items())
        ]
        positions = await asyncio.gather(
            *(self._position(session, a.connector_id) for a in assessments if a.verdict)
        )
        pings = []
        reported = iter(positions)
        for item in assessments:
            self.memory[item.connector_id] = item.memory
            if item.verdict is None:
                continue
            pings.append(
                HealthPing(
                    connector_id=item.connector_id,
                    tenant_id=item.tenant_id,
                    status=item.verdict.status,
                    failure=item.verdict.failure,
                    retryable=item.verdict.retryable,
                    checked_at=now_ms,
                    latency_ms=latency_ms,
                    message=item.verdict.message,
                    position=next(reported),
                )
            )
        self.metrics.connectors.set(len(listing))
        return pings

    async def run_once(self, session: aiohttp.ClientSession, producer: AIOKafkaProducer) -> int:
        self.metrics.checks.inc()
        try:
            pings = await self.check(session)
        except ConnectUnreachable as error:
            self.metrics.up.set(0)
            self.metrics.errors.inc()
            if self.outage_since is None:
                self.outage_since = time.monotonic()
                log.warning(
                    "Kafka Connect at %s does not answer (%s); no pings until it does",
                    self.url,
                    error,
                )
            return 0
        self.metrics.up.set(1)
        if self.outage_since is not None:
            log.warning(
                "Kafka Connect at %s answers again after %.0f s",
                self.url,
                time.monotonic() - self.outage_since,
            )
            self.outage_since = None
        codec = registry().codec("HealthPing")
        topic = self.settings.topics.health
        try:
            futures = [
                await producer.send(
                    topic,
                    key=p.connector_id.encode(),
                    value=codec.encode(p.model_dump(mode="json")),
                )
                for p in pings
            ]
            for future in futures:
                await future
        except Exception as error:  # the broker is away: count it, the next round retries
            self.metrics.errors.inc()
            log.warning("publishing %d ping(s) to %s failed: %s", len(pings), topic, error)
            return 0
        self.metrics.pings.inc(len(pings))
        self.metrics.last_success.set(time.time())
        return len(pings)

    async def run(self, stop: asyncio.Event, metrics_port: int | None) -> None:
        async with contextlib.AsyncExitStack() as resources:
            if metrics_port is not None:
                runner = await serve_metrics(self.metrics, self.settings.web_host, metrics_port)
                resources.push_async_callback(runner.cleanup)
            producer = await open_producer(self.settings)
            resources.push_async_callback(producer.stop)
            session = await resources.enter_async_context(aiohttp.ClientSession())
            log.info("watching Kafka Connect at %s every %g s", self.url, self.interval_s)
            while not stop.is_set():
                await self.run_once(session, producer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_s)


async def serve_metrics(metrics: ProbeMetrics, host: str, port: int) -> web.AppRunner:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.page(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def run_until_signalled(probe: ConnectProbe, metrics_port: int | None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await probe.run(stop, metrics_port)

    asyncio.run(main())
