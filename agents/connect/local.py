"""One Kafka Connect worker in distributed mode on 127.0.0.1, from Maven Central jars.

`up` resolves `connect-runtime`, `connect-file` and `connect-json` with `mvn` from
`agents/connect/pom.xml` (shipped with the package) into
`<local dir>/connect/jars-<version>/` (reused afterwards), writes a
`worker-<port>.properties` and starts
`org.apache.kafka.connect.cli.ConnectDistributed`; it returns once `GET /connectors` answers.
The worker creates its internal topics (`<group>-configs`, `-offsets`, `-status`) itself.
`down` stops only the worker it started (pid file + command line check).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agents.broker.jvm import running_pid, stop
from agents.broker.local import HOME, LocalKafkaError, answers_metadata, copy_dependencies

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

    def pid(self) -> int | None:
        return running_pid(self.pid_file, MAIN_CLASS, self.config_file)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/connectors", timeout=3) as response:  # noqa: S310 - local worker
                json.load(response)
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    def up(self, timeout_s: float = 120.0) -> str:
        if self.pid() is not None:
            self._wait_ready(timeout_s, None)
            return f"already running (pid {self.pid()}) at {self.url}"
        if shutil.which("java") is None:
            raise LocalKafkaError("java not found: install a JDK 17 or newer")
        if _port_taken(self.port):
            raise LocalKafkaError(
                f"port {self.port} is taken by another process: set CONNECT_PORT or --port"
            )
        if not answers_metadata(self.bootstrap):
            raise LocalKafkaError(
                f"no Kafka broker answers at {self.bootstrap}: start one with "
                "`connector-recovery kafka up` or set KAFKA_BOOTSTRAP_SERVERS"
            )
        copy_dependencies(POM, self.jars, f"Kafka Connect {connect_version()}")
        self.root.mkdir(parents=True, exist_ok=True)
        log4j = self.root / f"log4j-{self.port}.properties"
        log4j.write_text(LOG4J.format(log=self.log_file))
        self.config_file.write_text(
            WORKER_PROPERTIES.format(bootstrap=self.bootstrap, group=self.group, port=self.port)
        )
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [
                    "java",
                    f"-Xmx{HEAP}",
                    f"-Xms{HEAP}",
                    f"-Dlog4j.configuration=file:{log4j}",
                    "-cp",
                    f"{self.jars}/*",
                    MAIN_CLASS,
                    str(self.config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        try:
            self._wait_ready(timeout_s, process)
        except LocalKafkaError:
            self.down()
            raise
        return (
            f"started Kafka Connect {connect_version()} (distributed, group {self.group}) at "
            f"{self.url} on {self.bootstrap} in {time.monotonic() - started:.1f}s "
            f"(pid {process.pid}, log {self.log_file})"
        )

    def _wait_ready(self, timeout_s: float, process: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKafkaError(
                    f"Kafka Connect exited with {process.returncode}: {self._last_error()}"
                )
            if self.answers():
                return
            time.sleep(0.3)
        raise LocalKafkaError(
            f"Kafka Connect at {self.url} did not answer within {timeout_s:.0f}s; "
            f"see {self.log_file}"
        )

    def _last_error(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return f"no log at {self.log_file}"
        errors = [line for line in lines if " ERROR " in line]
        return errors[-1].strip() if errors else f"see {self.log_file}"

    def down(self, timeout_s: float = 30.0) -> str:
        pid = stop(self.pid_file, MAIN_CLASS, self.config_file, timeout_s)
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
