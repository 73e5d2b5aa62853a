"""A simulated fleet of ERP/CRM connectors with injected faults, acting as their runtime:
it publishes health pings, and answers recovery requests on `connector.recovery.requests`
(the `command_topic` action) by restarting the connector.

Faults (per connector):
* `transient` — times out for a while; a restart (any attempt) heals it;
* `stubborn` — automatic restarts do not help; a Platform Admin's manual recovery does;
* `flapping` — alternates healthy/unhealthy for a while, then settles;
* `auth` — a non-retryable credential failure; healed by a manual recovery;
* everything else stays healthy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.broker.client import client_options, start_client
from agents.settings import Settings
from agents.wire.codec import registry
from streams.models import RecoveryMode

FLEET = [
    # (connector, tenant)
    ("SAP-AR", "acme"),
    ("SAP-AP", "acme"),
    ("SAP-GL", "acme"),
    ("SAP-MM", "acme"),
    ("SFDC-CRM", "acme"),
    ("SFDC-MKT", "acme"),
    ("WORKDAY-HR", "acme"),
    ("COUPA-PO", "acme"),
    ("NETSUITE-GL", "globex"),
    ("NETSUITE-AR", "globex"),
    ("HUBSPOT-CRM", "globex"),
    ("ZENDESK-TICKETS", "globex"),
    ("SHOPIFY-ORDERS", "globex"),
    ("STRIPE-PAYMENTS", "globex"),
    ("DYNAMICS-FIN", "initech"),
    ("DYNAMICS-SCM", "initech"),
    ("JIRA-ISSUES", "initech"),
    ("SERVICENOW-ITSM", "initech"),
    ("ORACLE-EBS-AR", "initech"),
    ("ORACLE-EBS-GL", "initech"),
    ("SNOWFLAKE-SYNC", None),
    ("BIGQUERY-EXPORT", None),
    ("S3-LANDING", None),
    ("POSTGRES-CDC", None),
    ("MYSQL-CDC", None),
    ("MONGO-CDC", None),
]
FLEET += [(f"SFTP-FEED-{i:02d}", ["acme", "globex", "initech", None][i % 4]) for i in range(24)]


@dataclass
class SimConnector:
    connector_id: str
    tenant_id: str | None
    fault: str = "none"
    fails_at: float = 0.0  # seconds after start
    settles_at: float = 0.0  # flapping ends
    broken: bool = False
    offset: int = 0

    def status(self, elapsed: float, tick: int) -> tuple[bool, str | None, bool]:
        """(healthy, failure kind, retryable) at `elapsed` seconds."""
        if self.fault == "flapping" and self.fails_at <= elapsed < self.settles_at:
            return tick % 2 == 0, "http_503", True
        if (
            self.fault != "none"
            and not self.broken
            and elapsed >= self.fails_at
            and (self.fault != "flapping")
        ):
            self.broken = True
        if not self.broken:
            return True, None, True
        if self.fault == "auth":
            return False, "auth", False
        return False, "timeout", True


@dataclass
class Simulation:
    settings: Settings
    interval_s: float = 1.0
    connectors: dict[str, SimConnector] = field(default_factory=dict)
    sent: int = 0
    restarts: int = 0

    def __post_init__(self) -> None:
        for connector_id, tenant in FLEET:
            self.connectors[connector_id] = SimConnector(connector_id, tenant)
        faults = {
            "SFTP-FEED-03": ("transient", 4),
            "SHOPIFY-ORDERS": ("transient", 6),
            "POSTGRES-CDC": ("transient", 9),
            "SAP-AP": ("transient", 12),
            "DYNAMICS-SCM": ("transient", 8),  # tenant initech: its webhook is down
            "SAP-AR": ("stubborn", 5),
            "HUBSPOT-CRM": ("flapping", 3),
            "SFDC-CRM": ("auth", 7),
        }
        for connector_id, (fault, at) in faults.items():
            sim = self.connectors[connector_id]
            sim.fault, sim.fails_at, sim.settles_at = fault, at, at + 14

    async def run(self, duration_s: float, stop: asyncio.Event | None = None) -> None:
        codec = registry().codec("HealthPing")
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all", linger_ms=10)
        await start_client(producer)
        runtime = asyncio.create_task(self._runtime())
        started = time.monotonic()
        tick = 0
        try:
            while time.monotonic() - started < duration_s and not (stop and stop.is_set()):
                elapsed = time.monotonic() - started
                now = time.time_ns() // 1_000_000
                for sim in self.connectors.values():
                    healthy, failure, retryable = sim.status(elapsed, tick)
                    sim.offset += 0 if not healthy else 17
                    record = {
                        "connector_id": sim.connector_id,
                        "tenant_id": sim.tenant_id,
                        "status": "HEALTHY" if healthy else "UNHEALTHY",
                        "failure": failure,
                        "retryable": retryable,
                        "checked_at": now,
                        "latency_ms": 40,
                        "message": None,
                        "position": f"offset-{sim.offset}",
                    }
                    await producer.send(
                        self.settings.topics.health,
                        key=sim.connector_id.encode(),
                        value=codec.encode(record),
                    )
                    self.sent += 1
                tick += 1
                await asyncio.sleep(self.interval_s)
        finally:
            runtime.cancel()
            await producer.stop()

    async def _runtime(self) -> None:
        """Act on recovery requests as a connector runtime would."""
        codec = registry().codec("RecoveryRequest")
        result_codec = registry().codec("RecoveryResult")
        consumer = AIOKafkaConsumer(
            self.settings.topics.recovery_requests,
            **client_options(self.settings),
            group_id=f"{self.settings.app_id}-sim-runtime",
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(**client_options(self.settings))
        try:  # started inside: stop() closes what a failed start() left open
            await consumer.start()
            await producer.start()
            async for message in consumer:
                request = codec.decode(message.value)
                sim = self.connectors.get(request["connector_id"])
                if sim is None:
                    continue
                manual = request["mode"] == RecoveryMode.MANUAL.value
                healed = sim.fault == "transient" or manual
                if healed:
                    sim.broken = False
                    sim.fault = "none"
                self.restarts += 1
                result = {
                    "request_id": request["request_id"],
                    "connector_id": sim.connector_id,
                    "incident_id": request["incident_id"],
                    "attempt": request["attempt"],
                    "ok": True,
                    "detail": "restarted" if healed else "restarted; still failing",
                    "finished_at": time.time_ns() // 1_000_000,
                }
                await producer.send(
                    self.settings.topics.recovery_results,
                    key=sim.connector_id.encode(),
                    value=result_codec.encode(result),
                )
        finally:
            await consumer.stop()
            await producer.stop()
