"""A single-node Apache Kafka (KRaft) on 127.0.0.1, started from Maven Central jars.

`up` resolves `org.apache.kafka:kafka_2.13` with `mvn` from `pom.xml` beside this module
(package data, so an installed package has it) into `HOME/kafka/jars-<version>/` (reused
afterwards; HOME is $CR_LOCAL_DIR, else `.local/` of a source checkout, ignored by git, else
the per-user state directory), formats the storage with
`kafka.tools.StorageTool`, starts `kafka.Kafka` with a generated `server.properties` and
waits until the broker answers a metadata request. `down` stops only the broker it started
(pid file + command line check). No Docker engine needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents.broker.jvm import running_pid, stop
from agents.settings import state_home

POM = Path(__file__).with_name("pom.xml")
CHECKOUT = Path(__file__).resolve().parents[2]  # site-packages when installed


def _home() -> Path:
    configured = os.environ.get("CR_LOCAL_DIR")
    if configured:
        return Path(configured)
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT / ".local"
    return state_home()


HOME = _home()
HEAP = os.environ.get("CR_KAFKA_HEAP", "512m")
MAIN_CLASS = "kafka.Kafka"

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=1048577
# A stray client must never create the audit topic with default (7-day) retention.
auto.create.topics.enable=false
"""

# A client listener with TLS and SCRAM-SHA-512, plus ACLs (StandardAuthorizer). The
# PLAINTEXT listener stays for the controller and local administration: its principal,
# ANONYMOUS, is the super user that creates SCRAM users and ACLs. A resource with no ACL is
# open to every authenticated user; one with ACLs only to the principals they name.
SECURE_PROPERTIES = """\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},\\
    SASL_SSL://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\\
    org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=true
"""

LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.request.logger=WARN
"""


class LocalKafkaError(RuntimeError):
    pass


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:
        raise LocalKafkaError(f"no <kafka.version> in {POM}")
    return match.group(1)


def copy_dependencies(pom: Path, target: Path, what: str) -> Path:
    """Resolve the runtime jars of `pom` from Maven Central into `target`, once."""
    marker = target / ".complete"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={target}",
    ]
    print(f"resolving {what} jars from Maven Central ...", file=sys.stderr)
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise LocalKafkaError(
            "mvn not found: install Apache Maven (apt-get install maven)"
        ) from None
    if result.returncode != 0:
        raise LocalKafkaError(f"mvn failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.write_text(what)
    return target


@dataclass(frozen=True)
class Broker:
    port: int
    # With both set: a SASL_SSL (SCRAM-SHA-512) listener on `sasl_port`, its certificate and
    # unencrypted PKCS#8 key in one PEM file at `keystore` (see SECURE_PROPERTIES).
    sasl_port: int | None = None
    keystore: Path | None = None

    @property
    def root(self) -> Path:
        return HOME / "kafka"

    @property
    def jars(self) -> Path:
        return self.root / f"jars-{kafka_version()}"

    @property
    def data(self) -> Path:
        return self.root / f"data-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / f"broker-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"broker-{self.port}.log"

    @property
    def config_file(self) -> Path:
        return self.root / f"server-{self.port}.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- jars -----------------------------------------------------------------------------
    def resolve_jars(self) -> Path:
        return copy_dependencies(POM, self.jars, f"Apache Kafka {kafka_version()}")

    def _java(self, *args: str, heap: str | None = None) -> list[str]:
        command = ["java"]
        if heap:
            command += [f"-Xmx{heap}", f"-Xms{heap}"]
        return [
            *command,
            f"-Dlog4j.configuration=file:{self.root / 'log4j.properties'}",
            "-cp",
            f"{self.jars}/*",
            *args,
        ]

    # -- lifecycle ------------------------------------------------------------------------
    def pid(self) -> int | None:
        return running_pid(self.pid_file, MAIN_CLASS, self.config_file)

    def up(self, timeout_s: float = 120.0) -> str:
        if self.pid() is not None:
            wait_until_ready(self.bootstrap, timeout_s)
            return f"already running (pid {self.pid()}) on {self.bootstrap}"
        for port, role in ((self.port, "client"), (self.port + 1, "controller")):
            holder = port_holder(port)
            if holder is not None and port == self.port and answers_metadata(self.bootstrap):
                # e.g. started from another copy of the project: a broker is what was asked for
                return f"a Kafka broker already answers on {self.bootstrap}: {holder}"
            if holder is not None:
                raise LocalKafkaError(
                    f"port {port} ({role} listener) is held by {holder}; stop it or pick "
                    f"another port: KAFKA_PORT=N connector-recovery kafka up (uses N and N+1)"
                )
        self.resolve_jars()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j.properties").write_text(LOG4J.format(log=self.log_file))
        properties = SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.port + 1, data=self.data
        )
        if self.sasl_port is not None and self.keystore is not None:
            secure = SECURE_PROPERTIES.format(
                port=self.port,
                controller_port=self.port + 1,
                sasl_port=self.sasl_port,
                keystore=self.keystore,
            )
            keys = {line.split("=", 1)[0] for line in secure.splitlines() if "=" in line}
            kept = [line for line in properties.splitlines() if line.split("=", 1)[0] not in keys]
            properties = "\n".join(kept) + "\n" + secure
        self.config_file.write_text(properties)
        if not (self.data / "meta.properties").exists():
            formatted = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(self.config_file),
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise LocalKafkaError(f"StorageTool format failed: {formatted.stderr[-2000:]}")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config_file), heap=HEAP),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        started = time.monotonic()
        try:
            wait_until_ready(self.bootstrap, timeout_s, process=process)
        except LocalKafkaError as error:
            self.down()
            raise LocalKafkaError(f"{error}; see its log: {self.log_file}") from None
        return (
            f"started Apache Kafka {kafka_version()} (KRaft) on {self.bootstrap} "
            f"in {time.monotonic() - started:.1f}s (pid {process.pid}, log {self.log_file})"
        )

    def down(self, timeout_s: float = 30.0) -> str:
        pid = stop(self.pid_file, MAIN_CLASS, self.config_file, timeout_s)
        if pid is None:
            return f"no broker started by this project on port {self.port}"
        return f"stopped broker pid {pid}"

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            held = [
                f"port {port} is held by {holder}"
                for port in (self.port, self.port + 1)
                if (holder := port_holder(port)) is not None
            ]
            return f"down (port {self.port})" + (f", but {'; '.join(held)}" if held else "")
        ready = answers_metadata(self.bootstrap)
        state = "up" if ready else "starting"
        return f"{state}: pid {pid} on {self.bootstrap}, log {self.log_file}"


def port_holder(port: int) -> str | None:
    """Who listens on a local TCP port: `pid N (command line)` when /proc shows it, else
    `another process`; None when the port is free."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None if not _connects(port) else "another process"
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (process / "fd").iterdir()}
            if links & sockets:
                command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                return f"pid {process.name} ({command.strip()[:120]})"
        except OSError:  # gone, or another user's: not ours to read
            continue
    return "another process (pid not visible to this user)"


def _connects(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    """16 random bytes, base64url without padding, as `kafka-storage random-uuid` makes it;
    like Kafka's `Uuid.randomUuid`, never one starting with "-" (1 in 64), which the
    storage tool's argument parser would take for an option and refuse."""
    import base64  # noqa: PLC0415 - only needed when formatting

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def answers_metadata(bootstrap: str) -> bool:
    # A broker that is still starting refuses connections; that is the expected answer here,
    # not something to log on every probe.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - keep CLI start fast

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return True
        except Exception:  # any failure means "not ready yet"
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def wait_until_ready(
    bootstrap: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalKafkaError(f"broker exited with {process.returncode}")
        if answers_metadata(bootstrap):
            return
        time.sleep(0.5)
    raise LocalKafkaError(f"broker on {bootstrap} did not answer within {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="connector-recovery kafka", description="Local single-node Apache Kafka (KRaft)."
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("KAFKA_PORT", "9092")),
        help="client port (default: $KAFKA_PORT, else 9092); the controller listens on PORT+1",
    )
    args = parser.parse_args(argv)
    broker = Broker(args.port)
    try:
        print(getattr(broker, args.action)())
    except LocalKafkaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
