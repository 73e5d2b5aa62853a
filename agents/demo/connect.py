"""`demo --connect`: a real Kafka Connect worker with three FileStream connectors beside the
simulated fleet, watched by `probe kafka-connect`. `invoices-sink` writes into a directory
that does not exist, so its task fails; the policy's restarts fail too, an incident opens,
and the demo's Platform Admin creates the directory and recovers it by hand."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.connect.local import ConnectWorker, default_port

BROKEN = "invoices-sink"


@dataclass
class DemoConnect:
    bootstrap: str
    run: str
    home: Path
    env: dict[str, str]
    worker: ConnectWorker = field(init=False)
    probe: subprocess.Popen[bytes] | None = None
    started_worker: bool = False

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self.worker = ConnectWorker(default_port(), self.bootstrap, group=f"{self.run}-connect")

    @property
    def url(self) -> str:
        return self.worker.url

    @property
    def missing_directory(self) -> Path:
        return self.home / "connect" / "invoices"

    def connectors(self) -> dict[str, dict[str, str]]:
        files = self.home / "connect"
        return {
            "lines-source": {
                "connector.class": "FileStreamSource",
                "file": str(files / "lines.txt"),
                "topic": f"{self.run}.lines",
                "tenant": "acme",
            },
            "orders-sink": {
                "connector.class": "FileStreamSink",
                "topics": f"{self.run}.orders",
                "file": str(files / "orders.txt"),
                "tenant": "globex",
            },
            BROKEN: {
                "connector.class": "FileStreamSink",
                "topics": f"{self.run}.orders",
                "file": str(self.missing_directory / "invoices.txt"),
                "tenant": "acme",
            },
        }

    def policy_lines(self) -> str:
        """`connectors:` entries: restart through Connect's REST API (KIP-745)."""
        action = f'{{max_retries: 2, recovery_action: {{type: kafka_connect, url: "{self.url}"}}}}'
        return "".join(f"  {name}: {action}\n" for name in self.connectors())

    def start(self) -> str:
        self.started_worker = self.worker.pid() is None
        started = self.worker.up()
        (self.home / "connect").mkdir(parents=True, exist_ok=True)
        (self.home / "connect" / "lines.txt").write_text("".join(f"line {n}\n" for n in range(100)))
        asyncio.run(self._topics_and_orders())
        for name, config in self.connectors().items():
            _put(f"{self.url}/connectors/{name}/config", {**config, "tasks.max": "1"})
        return started

    async def _topics_and_orders(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topics = [NewTopic(f"{self.run}.{t}", 1, 1) for t in ("lines", "orders")]
            await admin.create_topics(topics)
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for number in range(100):
                await producer.send(f"{self.run}.orders", f"order {number}".encode())
        finally:
            await producer.stop()

    def start_probe(self, log: Path) -> None:
        with log.open("wb") as out:
            self.probe = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agents.cli",
                    "probe",
                    "kafka-connect",
                    "--url",
                    self.url,
                    "--interval",
                    "1",
                    "--metrics-port",
                    "0",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def repair(self) -> str:
        """What the operator does before recovering the broken sink by hand."""
        self.missing_directory.mkdir(parents=True, exist_ok=True)
        return f"operator creates the missing directory of {BROKEN}"

    def summary(self) -> str:
        states: list[str] = []
        for name in self.connectors():
            try:
                status = _get(f"{self.url}/connectors/{name}/status")
            except OSError:
                continue
            tasks = "/".join(task["state"] for task in status["tasks"]) or "-"
            states.append(f"{name} {status['connector']['state']} (tasks {tasks})")
        sunk = self.missing_directory / "invoices.txt"
        lines = len(sunk.read_text().splitlines()) if sunk.exists() else 0
        return f"Kafka Connect: {', '.join(states)}; {BROKEN} wrote {lines} of 100 orders"

    def stop(self) -> None:
        if self.probe is not None and self.probe.poll() is None:
            self.probe.send_signal(signal.SIGTERM)
            self.probe.wait(30)
        for name in self.connectors():
            with contextlib.suppress(OSError):
                _request(f"{self.url}/connectors/{name}", "DELETE")
        if self.started_worker:
            self.worker.down()


def _request(url: str, method: str, body: object = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the demo's own local Connect worker
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
        return bytes(response.read())


def _get(url: str) -> Any:
    return json.loads(_request(url, "GET"))


def _put(url: str, config: dict[str, str], timeout_s: float = 60) -> None:
    """A worker that has just joined its group answers 409 for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _request(url, "PUT", config)
            return
        except urllib.error.HTTPError as error:
            if error.code != 409 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
