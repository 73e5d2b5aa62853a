"""The one lifecycle of the local JVM services (agents/broker/jvm.py), which the local broker
and the local Connect worker both run: checked with a stand-in `java` on PATH (a Python
process that answers, exits or hangs as its config file says), so no JDK, no Maven and no
broker are needed. The real services are started by tests/kafka/test_kafka_connect.py and
tests/security/test_kafka_security.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.broker.jvm import JvmService, LocalKafkaError
from agents.testing.kafka import free_port, wait_for

MAIN_CLASS = "org.example.StandIn"

# Stands in for `java ... <main class> <config>`: the config's one word says what it does.
STAND_IN = textwrap.dedent(
    """\
    import signal, sys, time
    config = sys.argv[-1]
    mode = open(config).read().strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("[t] INFO starting", flush=True)
    if mode == "exit":
        print("[t] ERROR the config names no such listener (org.example.Boot)", flush=True)
        sys.exit(3)
    if mode == "ready":
        open(config + ".ready", "w").close()
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture
def java_on_path(tmp_path: Path) -> Iterator[Path]:
    """A `java` on PATH that runs the stand-in with the arguments it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    java = bin_dir / "java"
    java.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    java.chmod(0o755)
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{saved}"
    yield bin_dir
    os.environ["PATH"] = saved


def service(tmp_path: Path) -> JvmService:
    jars = tmp_path / "jars"
    jars.mkdir(exist_ok=True)
    (jars / ".complete").write_text("resolved")  # as after a first `up`: no mvn run
    return JvmService(
        label="stand-in",
        main_class=MAIN_CLASS,
        pom=tmp_path / "pom.xml",
        artifact="Stand-in 1.0",
        jars=jars,
        config_file=tmp_path / "stand-in.properties",
        log4j_file=tmp_path / "log4j.properties",
        pid_file=tmp_path / "stand-in.pid",
        log_file=tmp_path / "stand-in.log",
        heap="64m",
    )


def launch(svc: JvmService, mode: str, timeout_s: float = 20) -> int:
    ready_file = Path(f"{svc.config_file}.ready")
    return svc.launch(
        config=mode,
        log4j="log4j.rootLogger=INFO\n",
        ready=ready_file.exists,
        where="in the test",
        timeout_s=timeout_s,
        interval_s=0.05,
    )


def alive(pid: int) -> bool:
    """Running and not a zombie (a stopped child of this process stays one until reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.usefixtures("java_on_path")
def test_launch_starts_the_service_and_stop_stops_only_it(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    pid = launch(svc, "ready")
    try:
        assert svc.pid() == pid
        assert svc.pid_file.read_text() == str(pid)
        assert svc.config_file.read_text() == "ready"
        assert svc.log4j_file.read_text() == "log4j.rootLogger=INFO\n"
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-Xmx64m" in command
        assert f"-Dlog4j.configuration=file:{svc.log4j_file}".encode() in command
        assert os.getsid(pid) == pid  # a session of its own: a Ctrl-C of `up` misses it
        assert svc.stop(timeout_s=10) == pid
        wait_for(lambda: not alive(pid), 10, "the stand-in to exit")
        assert not svc.pid_file.exists()
        assert svc.pid() is None
        assert svc.stop(timeout_s=10) is None  # nothing left that this project started
    finally:
        if alive(pid):
            os.kill(pid, 9)


@pytest.mark.usefixtures("java_on_path")
def test_a_service_that_exits_before_it_answers_is_one_line_with_its_error(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    with pytest.raises(LocalKafkaError) as raised:
        launch(svc, "exit")
    message = str(raised.value)
    assert message.startswith("stand-in exited with 3: ")
    assert "ERROR the config names no such listener" in message
    assert len(message.splitlines()) == 1
    assert svc.pid() is None
    assert not svc.pid_file.exists()


@pytest.mark.usefixtures("java_on_path")
def test_a_service_that_never_answers_is_stopped_and_names_its_log(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    with pytest.raises(LocalKafkaError) as raised:
        launch(svc, "hang", timeout_s=1)
    assert str(raised.value) == (
        f"stand-in in the test did not answer within 1s; see {svc.log_file}"
    )
    assert svc.pid() is None
    assert not svc.pid_file.exists()


@pytest.mark.usefixtures("java_on_path")
def test_a_pid_file_naming_another_process_is_never_signalled(
    tmp_path: Path,
) -> None:
    """A recycled pid: the pid file names a process that is not this service."""
    svc = service(tmp_path)
    svc.config_file.write_text("ready")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        svc.pid_file.write_text(str(other.pid))
        assert svc.pid() is None
        assert svc.stop(timeout_s=1) is None
        assert other.poll() is None
        assert not svc.pid_file.exists()  # a stale pid file goes
    finally:
        other.kill()
        other.wait()


def local_command(tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        env={**os.environ, "CR_LOCAL_DIR": str(tmp_path / "local"), "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["kafka", "connect"])
def test_up_without_java_says_so_before_resolving_anything(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    port = str(free_port())
    result = local_command(tmp_path, str(empty), command, "up", "--port", port)
    assert result.returncode == 2
    assert result.stderr == "error: java not found: install a JDK 17 or newer\n"
    assert not (tmp_path / "local" / command / "jars").exists()
    assert not list((tmp_path / "local").glob(f"{command}/jars-*"))


def test_a_failed_maven_resolution_is_one_line(tmp_path: Path, java_on_path: Path) -> None:
    mvn = java_on_path / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        "echo '[INFO] Scanning for projects...'\n"
        "echo '[ERROR] Failed to execute goal: Could not transfer artifact (Network unreachable)'\n"
        "echo '[ERROR] -> [Help 1]'\n"
        "exit 1\n"
    )
    mvn.chmod(0o755)
    port = str(free_port())
    result = local_command(tmp_path, str(java_on_path), "kafka", "up", "--port", port)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: mvn could not resolve the Apache Kafka ")
    assert "(exit 1): [ERROR] Failed to execute goal: Could not transfer artifact" in errors[0]
    assert "Maven Central" in errors[0]
    # everything but the progress line is the one error line
    assert [line for line in result.stderr.splitlines() if not line.startswith("resolving")] == [
        errors[0]
    ]
