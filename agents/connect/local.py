"""One Kafka Connect worker in distributed mode on 127.0.0.1, from Maven Central jars.

`up` resolves `connect-runtime`, `connect-file` and `connect-json` with `mvn` from
`agents/connect/pom.xml` (shipped with the package) into
`<local dir>/connect/jars-<version>/` (reused afterwards), writes a
`worker-<port>.properties` and starts
`org.apache.kafka.connect.cli.ConnectDistributed`; it returns once `GET /connectors` answers.
The worker creates its internal topics (`<group>-configs`, `-offsets`, `-status`) itself.
`down` stops only the worker it started (pid file + command line check). The lifecycle
itself is `agents/broker/jvm.py`'s, shared with the local broker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agents.broker.jvm import HOME, JvmService, LocalKafkaError
from agents.broker.local import answers_metadata

POM = Path(__file__).with_name("pom.xml")
HEAP = os.environ.get("CR_CONNECT_HEAP", "512m")
MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"

WORKER_PROPERTIES = """\
bootstrap.servers={bootstrap}
group.id={group}
config.storage.topic={group}-configs
offset.storage.topic={group}-offsets
status.storage.topic={group}-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=1
# Records are plain strings end to end: the FileStream connectors read and write lines.
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
# Commit offsets every second (default 60 s) so `GET /connectors/{{name}}/offsets`, and with
# it the probe's `position`, follows the data closely.
offset.flush.interval.ms=1000
# Find plugins through their ServiceLoader manifests only (KIP-898): the reflective scan of
# the classpath, also done by the default `hybrid_warn`, takes 10-20 times longer.
plugin.discovery=service_load
listeners=http://127.0.0.1:{port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={port}
"""

LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.kafka.common=WARN
log4j.logger.org.reflections=ERROR
"""


def connect_version() -> str:
    match = re.search(r"<connect.version>([^<]+)</connect.version>", POM.read_text())
    if match is None:
        raise LocalKafkaError(f"no <connect.version> in {POM}")
    return match.group(1)


def default_bootstrap() -> str:
    return os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    )


def default_port() -> int:
    return int(os.environ.get("CONNECT_PORT", "8083"))


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class ConnectWorker:
    port: int
    bootstrap: str
    # The Connect cluster's group id; it also names the three internal topics.
    group: str = "connector-recovery-connect"

    @property
    def root(self) -> Path:
        return HOME / "connect"

    @property
    def jars(self) -> Path:
        return self.root / f"jars-{connect_version()}"

    @property
    def pid_file(self) -> Path:
        return self.root / f"worker-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"worker-{self.port}.log"

    @property
    def config_file(self) -> Path:
        return self.root / f"worker-{self.port}.properties"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self) -> JvmService:
        return JvmService(
            label="Kafka Connect",
            main_class=MAIN_CLASS,
            pom=POM,
            artifact=f"Kafka Connect {connect_version()}",
            jars=self.jars,
            config_file=self.config_file,
            log4j_file=self.root / f"log4j-{self.port}.properties",
            pid_file=self.pid_file,
            log_file=self.log_file,
            heap=HEAP,
        )

    def pid(self) -> int | None:
        return self.service.pid()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/connectors", timeout=3) as response:  # noqa: S310 - local worker
                json.load(response)
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    def up(self, timeout_s: float = 120.0) -> str:
        service = self.service
        if (pid := service.pid()) is not None:
            service.wait_ready(self.answers, timeout_s, where=f"at {self.url}", interval_s=0.3)
            return f"already running (pid {pid}) at {self.url}"
        service.require_java()
        if _port_taken(self.port):
            raise LocalKafkaError(
                f"port {self.port} is taken by another process: set CONNECT_PORT or --port"
            )
        if not answers_metadata(self.bootstrap):
            raise LocalKafkaError(
                f"no Kafka broker answers at {self.bootstrap}: start one with "
                "`connector-recovery kafka up` or set KAFKA_BOOTSTRAP_SERVERS"
            )
        started = time.monotonic()
        pid = service.launch(
            config=WORKER_PROPERTIES.format(
                bootstrap=self.bootstrap, group=self.group, port=self.port
            ),
            log4j=LOG4J.format(log=self.log_file),
            ready=self.answers,
            where=f"at {self.url}",
            timeout_s=timeout_s,
            interval_s=0.3,
        )
        return (
            f"started Kafka Connect {connect_version()} (distributed, group {self.group}) at "
            f"{self.url} on {self.bootstrap} in {time.monotonic() - started:.1f}s "
            f"(pid {pid}, log {self.log_file})"
        )

    def down(self, timeout_s: float = 30.0) -> str:
        pid = self.service.stop(timeout_s)
        if pid is None:
            return f"no Kafka Connect worker started by this project on port {self.port}"
        return f"stopped Kafka Connect pid {pid}"

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return f"down (port {self.port})"
        state = "up" if self.answers() else "starting"
        return f"{state}: pid {pid} at {self.url} on {self.bootstrap}, log {self.log_file}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="connector-recovery connect",
        description="Local Kafka Connect worker (distributed mode) on the local broker.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=default_port(), help="REST port")
    parser.add_argument("--bootstrap", default=default_bootstrap(), help="Kafka bootstrap servers")
    args = parser.parse_args(argv)
    worker = ConnectWorker(args.port, args.bootstrap)
    try:
        print(getattr(worker, args.action)())
    except LocalKafkaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
