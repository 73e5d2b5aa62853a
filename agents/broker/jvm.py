"""The lifecycle of a JVM service this project runs on the local machine (the local broker,
`agents/broker/local.py`; the local Connect worker, `agents/connect/local.py`), written
once: its runtime jars resolved from Maven Central with `mvn` (once per version), its
config and log4j files written, `java` started in a session of its own with its output in
a log file, its pid file, the wait until it answers, and a stop that signals only the
process it started.

A service is found again by its pid file, and only while that pid still runs the service's
main class with its config file, so a recycled pid is never signalled. Every failure is a
`LocalKafkaError` whose message is one line naming what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.settings import state_home

CHECKOUT = Path(__file__).resolve().parents[2]  # site-packages when installed


class LocalKafkaError(RuntimeError):
    """A local service (broker or Connect worker) could not be resolved, started or reached."""


def _home() -> Path:
    configured = os.environ.get("CR_LOCAL_DIR")
    if configured:
        return Path(configured)
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT / ".local"
    return state_home()


# Where the local services keep their jars, configs, data, logs and pid files: $CR_LOCAL_DIR,
# else `.local/` of a source checkout (ignored by git), else the per-user state directory.
HOME = _home()


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
        raise LocalKafkaError(
            f"mvn could not resolve the {what} jars (exit {result.returncode}): "
            f"{_cause(result.stdout + result.stderr)}; check that Maven Central (or the "
            "mirror in ~/.m2/settings.xml) is reachable, then run the command again"
        )
    marker.write_text(what)
    return target


def _cause(output: str) -> str:
    """The line of Maven's output that says what failed: its first error (those after it
    point at help pages), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return errors[0] if errors else (lines or ["no output"])[-1]


def running_pid(pid_file: Path, main_class: str, config_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if main_class in cmdline and str(config_file) in cmdline else None


def stop(pid_file: Path, main_class: str, config_file: Path, timeout_s: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; the pid stopped, or None if none ran."""
    pid = running_pid(pid_file, main_class, config_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)  # stale: what it names exited, or is not ours
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running_pid(pid_file, main_class, config_file):
        time.sleep(0.2)
    if running_pid(pid_file, main_class, config_file) is not None:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


@dataclass(frozen=True)
class JvmService:
    """One JVM service on this machine: where its files live and how it starts and stops.
    The service's module says what it is (main class, jars, config) and when it is ready."""

    label: str  # what the messages call it: "broker", "Kafka Connect"
    main_class: str
    pom: Path  # the Maven project whose runtime dependencies are the service's jars
    artifact: str  # what `mvn` resolves, for the messages: "Apache Kafka 4.0.1"
    jars: Path
    config_file: Path
    log4j_file: Path
    pid_file: Path
    log_file: Path
    heap: str

    def pid(self) -> int | None:
        """The pid of the service this project started, while it runs; else None."""
        return running_pid(self.pid_file, self.main_class, self.config_file)

    def java(self, *args: str, heap: str | None = None) -> list[str]:
        """The command line of `java` on the service's jars and log4j config."""
        command = ["java"]
        if heap:
            command += [f"-Xmx{heap}", f"-Xms{heap}"]
        return [
            *command,
            f"-Dlog4j.configuration=file:{self.log4j_file}",
            "-cp",
            f"{self.jars}/*",
            *args,
        ]

    def require_java(self) -> None:
        if shutil.which("java") is None:
            raise LocalKafkaError("java not found: install a JDK 17 or newer")

    def launch(
        self,
        *,
        config: str,
        log4j: str,
        ready: Callable[[], bool],
        where: str,
        timeout_s: float,
        prepare: Callable[[], None] | None = None,
        interval_s: float = 0.5,
    ) -> int:
        """Resolve the jars, write the config and log4j files, run `prepare` (a one-off
        tool on the config, such as formatting storage), start the service and wait until
        `ready()`. A service that exits or does not answer in time is stopped, and the
        error raised. The pid of the running service."""
        self.require_java()
        copy_dependencies(self.pom, self.jars, self.artifact)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.log4j_file.write_text(log4j)
        self.config_file.write_text(config)
        if prepare is not None:
            prepare()
        process = self._start()
        try:
            self.wait_ready(ready, timeout_s, where=where, process=process, interval_s=interval_s)
        except LocalKafkaError:
            self.stop(timeout_s=30.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)  # reaped: no zombie left behind in a long-lived caller
            raise
        return process.pid

    def _start(self) -> subprocess.Popen[bytes]:
        """`java <main class> <config file>` in a session of its own (a Ctrl-C in the
        terminal that ran `up` does not reach it), its output appended to the log file."""
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.java(self.main_class, str(self.config_file), heap=self.heap),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout_s: float,
        *,
        where: str,
        process: subprocess.Popen[bytes] | None = None,
        interval_s: float = 0.5,
    ) -> None:
        """Until `ready()`; a `process` that exits first, or the timeout, is an error that
        names the log's last error line (or the log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKafkaError(
                    f"{self.label} exited with {process.returncode}: {self.last_error()}"
                )
            if ready():
                return
            time.sleep(interval_s)
        raise LocalKafkaError(
            f"{self.label} {where} did not answer within {timeout_s:.0f}s; see {self.log_file}"
        )

    def last_error(self) -> str:
        """The log's last ERROR line, else where the log is."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return f"no log at {self.log_file}"
        errors = [line for line in lines if " ERROR " in line]
        return errors[-1].strip() if errors else f"see {self.log_file}"

    def stop(self, timeout_s: float) -> int | None:
        """Stop the service this project started: the pid stopped, or None if none ran."""
        return stop(self.pid_file, self.main_class, self.config_file, timeout_s)
