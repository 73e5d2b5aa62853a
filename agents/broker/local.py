"""A single-node Apache Kafka (KRaft) on 127.0.0.1, started from Maven Central jars.

`up` resolves `org.apache.kafka:kafka_2.13` with `mvn` from `pom.xml` beside this module
(package data, so an installed package has it) into `HOME/kafka/jars-<version>/` (reused
afterwards; HOME is $CR_LOCAL_DIR, else `.local/` of a source checkout, ignored by git, else
the per-user state directory), formats the storage with
`kafka.tools.StorageTool`, starts `kafka.Kafka` with a generated `server.properties` and
waits until the broker answers a metadata request. `down` stops only the broker it started
(pid file + command line check). No Docker engine needed. The lifecycle itself (jars,
files, java, pid file, wait, stop) is `agents/broker/jvm.py`'s, shared with the local
Connect worker; this module says what a broker is and when it is ready.
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

from agents.broker.jvm import HOME, JvmService, LocalKafkaError

POM = Path(__file__).with_name("pom.xml")
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


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:
        raise LocalKafkaError(f"no <kafka.version> in {POM}")
    return match.group(1)


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

    @property
    def service(self) -> JvmService:
        return JvmService(
            label="broker",
            main_class=MAIN_CLASS,
            pom=POM,
            artifact=f"Apache Kafka {kafka_version()}",
            jars=self.jars,
            config_file=self.config_file,
            log4j_file=self.root / f"log4j-{self.port}.properties",
            pid_file=self.pid_file,
            log_file=self.log_file,
            heap=HEAP,
        )

    # -- lifecycle ------------------------------------------------------------------------
    def pid(self) -> int | None:
        return self.service.pid()

    def up(self, timeout_s: float = 120.0) -> str:
        service = self.service
        if (pid := service.pid()) is not None:
            self._wait_ready(timeout_s)
            return f"already running (pid {pid}) on {self.bootstrap}"
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
        started = time.monotonic()
        pid = service.launch(
            config=self._properties(),
            log4j=LOG4J.format(log=self.log_file),
            ready=lambda: answers_metadata(self.bootstrap),
            where=f"on {self.bootstrap}",
            timeout_s=timeout_s,
            prepare=self._format_storage,
        )
        return (
            f"started Apache Kafka {kafka_version()} (KRaft) on {self.bootstrap} "
            f"in {time.monotonic() - started:.1f}s (pid {pid}, log {self.log_file})"
        )

    def _properties(self) -> str:
        properties = SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.port + 1, data=self.data
        )
        if self.sasl_port is None or self.keystore is None:
            return properties
        secure = SECURE_PROPERTIES.format(
            port=self.port,
            controller_port=self.port + 1,
            sasl_port=self.sasl_port,
            keystore=self.keystore,
        )
        keys = {line.split("=", 1)[0] for line in secure.splitlines() if "=" in line}
        kept = [line for line in properties.splitlines() if line.split("=", 1)[0] not in keys]
        return "\n".join(kept) + "\n" + secure

    def _format_storage(self) -> None:
        """KRaft storage is formatted once, with a new cluster id; a restart keeps it."""
        if (self.data / "meta.properties").exists():
            return
        formatted = subprocess.run(
            self.service.java(
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
            raise LocalKafkaError(
                f"StorageTool could not format {self.data}: "
                f"{(formatted.stderr.strip().splitlines() or ['no output'])[-1]}; "
                f"remove {self.data} and run `connector-recovery kafka up` again"
            )

    def _wait_ready(self, timeout_s: float) -> None:
        self.service.wait_ready(
            lambda: answers_metadata(self.bootstrap), timeout_s, where=f"on {self.bootstrap}"
        )

    def down(self, timeout_s: float = 30.0) -> str:
        pid = self.service.stop(timeout_s)
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
            descriptors = list((process / "fd").iterdir())
        except OSError:  # gone, or another user's: not ours to read
            continue
        if not sockets & _links(descriptors):
            continue
        try:
            command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone since
            continue
        return f"pid {process.name} ({command.strip()[:120]})"
    return "another process (pid not visible to this user)"


def _links(descriptors: list[Path]) -> set[str]:
    """What a process's open descriptors point to; one it closed meanwhile (a busy broker
    opens and closes segment files all the time) is skipped, not the whole process."""
    links = set()
    for descriptor in descriptors:
        try:
            links.add(os.readlink(descriptor))
        except OSError:
            continue
    return links


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
