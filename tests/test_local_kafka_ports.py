"""`connector-recovery kafka status|up` when another process holds the broker's port (or the
controller's, KAFKA_PORT+1): they say who holds it, at once, without starting Java."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.broker.local import _cluster_id
from tests.kafka.harness import free_port


def kafka(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", "kafka", *args],
        env={**os.environ, "CR_LOCAL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket this test process listens on (its holder is the test's own pid)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_status_says_who_holds_the_port(tmp_path: Path, listener: socket.socket) -> None:
    port = port_of(listener)
    result = kafka(tmp_path, "status", "--port", str(port))
    assert result.returncode == 0
    assert result.stdout.startswith(f"down (port {port}), but port {port} is held by pid ")
    assert f"held by pid {os.getpid()} (" in result.stdout


def test_up_on_a_held_client_port_says_who_holds_it(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = port_of(listener)
    result = kafka(tmp_path, "up", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: port {port} (client listener) is held by pid {os.getpid()} ("
    )
    assert "(uses N and N+1)" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "kafka").exists()  # refused before resolving or starting anything


def test_up_on_a_held_controller_port_names_it(tmp_path: Path, listener: socket.socket) -> None:
    controller = port_of(listener)
    with socket.socket() as probe:  # the client port below it must be free for this test
        if probe.connect_ex(("127.0.0.1", controller - 1)) == 0:
            pytest.skip(f"port {controller - 1} is in use on this machine")
    result = kafka(tmp_path, "up", "--port", str(controller - 1))
    assert result.returncode == 2
    assert f"port {controller} (controller listener) is held by pid {os.getpid()}" in (
        result.stderr
    )


def test_status_of_a_free_port_is_plain_down(tmp_path: Path) -> None:
    port = free_port()
    result = kafka(tmp_path, "status", "--port", str(port))
    if f"port {port + 1} is held" in result.stdout:
        pytest.skip(f"port {port + 1} is in use on this machine")
    assert result.stdout.strip() == f"down (port {port})"


def test_the_help_says_the_controller_uses_the_next_port(tmp_path: Path) -> None:
    result = kafka(tmp_path, "--help")
    assert "the controller listens on PORT+1" in " ".join(result.stdout.split())


def test_a_new_cluster_id_never_reads_as_an_option() -> None:
    """One random id in 64 starts with "-", which `kafka-storage format -t` took for an
    option: the local broker then failed to start (seen once in CI's broker-restart test)."""
    ids = [_cluster_id() for _ in range(2_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)  # 16 bytes, base64url, unpadded
    assert len(set(ids)) == len(ids)
