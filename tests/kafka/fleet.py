"""A fleet of simulated connectors publishing pings with librdkafka (confluent-kafka's
default `consistent_random` partitioner — not murmur2): live, in a background thread
(`Fleet`), or as the history a worker finds waiting when it starts (`produce_backlog`).

Both stamp a ping as a fleet does: the record's timestamp is the ping's `checked_at`, and
each connector's `checked_at` advances by its ping interval. The worker's clock ticks up
to the timestamps of what its router has forwarded (docs/worker.md), so a backlog stamped
at produce time instead would let heartbeat deadlines fire ahead of the data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from agents.wire.codec import registry


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ping_record(connector: str, unhealthy: bool, checked_at: int) -> dict[str, Any]:
    return {
        "connector_id": connector,
        "tenant_id": "acme",
        "retryable": True,
        "status": "UNHEALTHY" if unhealthy else "HEALTHY",
        "failure": "timeout" if unhealthy else None,
        "checked_at": checked_at,
        "latency_ms": None,
        "message": None,
        "position": f"{connector}@{checked_at}",
    }


def _producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # in order per partition through retries
            "log_level": 2,  # a broker outage is a test step, not an error to print
            **extra,
        }
    )


def produce_records(bootstrap: str, topic: str, records: Iterable[tuple[Any, Any, int]]) -> int:
    """(key, value, timestamp ms) records, in order per partition, batched (librdkafka's
    own queue, large batches): hundreds of thousands in seconds. Their count; raises if
    any was not delivered."""
    producer = _producer(
        bootstrap,
        **{
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        },
    )
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    count = 0
    for key, value, timestamp in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered, timestamp=timestamp)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(300)
    if remaining or failed:
        raise RuntimeError(f"{remaining} records not delivered, {len(failed)} failed: {failed[:3]}")
    return count


@dataclass(frozen=True)
class Backlog:
    """What `produce_backlog` wrote: `pings` pings, stamped from `first_at` to `last_at`."""

    pings: int
    first_at: int
    last_round_at: int  # the first ping of the last round: its connector pings again first
    last_at: int
    interval_ms: int
    produce_s: float

    def longest_silence_ms(self, live_from: int) -> int:
        """The longest a connector went without a ping, as stamped, if a live fleet took
        over at `live_from` (its first round's `checked_at`): between two rounds of the
        backlog, or between its last round and the live fleet's first."""
        return max(self.interval_ms, live_from - self.last_round_at)


def produce_backlog(
    bootstrap: str,
    topic: str,
    connectors: list[str],
    rounds: int,
    *,
    interval_s: float = 1.0,
    failing: dict[str, set[int]] | None = None,
    ends_at: int | None = None,
) -> Backlog:
    """`rounds` pings of each connector, the history of a fleet whose worker was away: the
    connectors ping every `interval_s`, each at its own phase of the interval (a fleet's
    checks are spread, not synchronised), the last round ending before `ends_at` (now).
    `failing`: connector -> rounds in which it reports UNHEALTHY. Pre-encoded and produced
    round after round, so every partition's timestamps only grow."""
    codec = registry().codec("HealthPing")
    interval_ms = round(interval_s * 1000)
    ends_at = now_ms() if ends_at is None else ends_at
    start = ends_at - rounds * interval_ms
    phases = [index * interval_ms // len(connectors) for index in range(len(connectors))]
    keys = [connector.encode() for connector in connectors]
    failing = failing or {}

    def records() -> Iterable[tuple[bytes, bytes, int]]:
        encode = codec.encode
        for round_ in range(rounds):
            base = start + round_ * interval_ms
            for connector, key, phase in zip(connectors, keys, phases, strict=True):
                at = base + phase
                down = round_ in failing.get(connector, ())
                yield key, encode(ping_record(connector, down, at)), at

    began = time.monotonic()
    pings = produce_records(bootstrap, topic, records())
    return Backlog(
        pings=pings,
        first_at=start,
        last_round_at=start + (rounds - 1) * interval_ms,
        last_at=start + (rounds - 1) * interval_ms + phases[-1],
        interval_ms=interval_ms,
        produce_s=time.monotonic() - began,
    )


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
    first_at: int | None = None  # checked_at of the first round
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Fleet:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        codec = registry().codec("HealthPing")
        producer = _producer(self.bootstrap, **{"linger.ms": 5})
        keys = [connector.encode() for connector in self.connectors]
        while not self._stop.is_set():
            now = now_ms()
            if self.first_at is None:
                self.first_at = now
            for connector, key in zip(self.connectors, keys, strict=True):
                unhealthy = self.rounds in self.failing.get(connector, set())
                value = codec.encode(ping_record(connector, unhealthy, now))
                while True:
                    try:
                        producer.produce(self.topic, key=key, value=value, timestamp=now)
                        break
                    except BufferError:  # a broker outage filled librdkafka's queue
                        producer.poll(0.05)
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
