"""A simulated fleet of ERP/CRM connectors with injected faults, acting as their runtime:
it publishes health pings, and answers recovery requests on `connector.recovery.requests`
(the `command_topic` action) by restarting the connector.

Faults (per connector):
* `transient` — times out for a while; a restart (any attempt) heals it, once it has been
  failing `heals_after_s` seconds (0: at once);
* `stubborn` — automatic restarts do not help; a Platform Admin's manual recovery does;
* `flapping` — alternates healthy/unhealthy for a while, then settles;
* `auth` — a non-retryable credential failure; healed by a manual recovery;
* `outage` — the ERP's database (`ERP_DB`) is down from `fails_at` to `settles_at`: every
  connector behind it times out, no restart (automatic or manual) helps, and they are
  healthy again on their own once it answers (`outage_window`);
* everything else stays healthy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

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

# The ERP database behind these connectors of the three tenants (the demo policy's
# dependency `erp-db`, the same globs): it goes down for a while and they fail as one outage.
# None of them carries another fault.
ERP_DB = "erp-db"
ERP_DB_CONNECTORS = ("SAP-GL", "SAP-MM", "NETSUITE-*", "DYNAMICS-FIN", "ORACLE-EBS-*")


def outage_window(duration_s: float) -> tuple[float, float]:
    """When the ERP database is down, in seconds after the fleet starts: from a quarter of
    the demo for a third of it (18-43 s of the default 75), so the outage opens once the
    other faults have played out and ends with time left to see it resolved."""
    return duration_s * 0.24, duration_s * 0.57


def behind_erp_db(connector_id: str) -> bool:
    return any(fnmatchcase(connector_id, glob) for glob in ERP_DB_CONNECTORS)


@dataclass
class SimConnector:
    connector_id: str
    tenant_id: str | None
    fault: str = "none"
    fails_at: float = 0.0  # seconds after start
    settles_at: float = 0.0  # flapping ends; the dependency of an outage answers again
    heals_after_s: float = 0.0  # transient: a restart heals it once failing this long
    broken: bool = False
    offset: int = 0

    def status(self, elapsed: float, tick: int) -> tuple[bool, str | None, bool]:
        """(healthy, failure kind, retryable) at `elapsed` seconds."""
        if self.fault == "flapping" and self.fails_at <= elapsed < self.settles_at:
            return tick % 2 == 0, "http_503", True
        if self.fault == "outage":
            down = self.fails_at <= elapsed < self.settles_at
            return (False, "timeout", True) if down else (True, None, True)
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

    duration_s: float = 75.0  # how long the demo runs: when the ERP database is down
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        for connector_id, tenant in FLEET:
            self.connectors[connector_id] = SimConnector(connector_id, tenant)
        faults = {
            "SFTP-FEED-03": ("transient", 4),
            "SHOPIFY-ORDERS": ("transient", 6),
            "POSTGRES-CDC": ("transient", 9),
            "SAP-AP": ("transient", 12),
            # tenant initech, whose webhook is down: failing longer than the group wait
            # (outages.group_wait_s, 10 s) holds its page, so that the page goes out, fails
            # and escalates
            "DYNAMICS-SCM": ("transient", 8),
            "SAP-AR": ("stubborn", 5),
            "HUBSPOT-CRM": ("flapping", 3),
            "SFDC-CRM": ("auth", 7),
        }
        for connector_id, (fault, at) in faults.items():
            sim = self.connectors[connector_id]
            sim.fault, sim.fails_at, sim.settles_at = fault, at, at + 14
        self.connectors["DYNAMICS-SCM"].heals_after_s = 15
        down, up = outage_window(self.duration_s)
        for sim in self.connectors.values():
            if behind_erp_db(sim.connector_id):
                sim.fault, sim.fails_at, sim.settles_at = "outage", down, up

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self, duration_s: float, stop: asyncio.Event | None = None) -> None:
        codec = registry().codec("HealthPing")
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all", linger_ms=10)
        await start_client(producer)
        runtime = asyncio.create_task(self._runtime())
        self.started = time.monotonic()
        tick = 0
        try:
            while self.elapsed() < duration_s and not (stop and stop.is_set()):
                elapsed = self.elapsed()
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
                failing_s = self.elapsed() - sim.fails_at
                if sim.fault == "outage":  # only the dependency answering again heals it
                    healed = sim.status(self.elapsed(), 0)[0]
                else:
                    transient = sim.fault == "transient" and failing_s >= sim.heals_after_s
                    healed = transient or manual
                if healed and sim.fault != "outage":
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
