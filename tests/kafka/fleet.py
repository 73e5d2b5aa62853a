"""A fleet of simulated connectors publishing pings with librdkafka (confluent-kafka's
default `consistent_random` partitioner — not murmur2), in a background thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Producer

from agents.wire.codec import registry


@dataclass
class Fleet:
    bootstrap: str
    topic: str
    connectors: list[str]
    # connector -> set of round numbers in which it reports UNHEALTHY
    failing: dict[str, set[int]] = field(default_factory=dict)
    interval_s: float = 0.2
    sent: int = 0
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Fleet:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        codec = registry().codec("HealthPing")
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "log_level": 2,  # a broker outage is a test step, not an error to print
            }
        )
        while not self._stop.is_set():
            now = time.time_ns() // 1_000_000
            for connector in self.connectors:
                unhealthy = self.rounds in self.failing.get(connector, set())
                record = {
                    "connector_id": connector,
                    "tenant_id": "acme",
                    "retryable": True,
                    "status": "UNHEALTHY" if unhealthy else "HEALTHY",
                    "failure": "timeout" if unhealthy else None,
                    "checked_at": now,
                    "latency_ms": None,
                    "message": None,
                    "position": f"{connector}@{now}",
                }
                producer.produce(self.topic, key=connector.encode(), value=codec.encode(record))
                self.sent += 1
            producer.poll(0)
            self.rounds += 1
            self._stop.wait(self.interval_s)
        remaining = producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} pings not delivered")

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        return self.sent
