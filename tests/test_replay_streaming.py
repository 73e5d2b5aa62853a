"""`replay`/`verify`/`export` fold the log as they read it: memory grows with the chains'
state, not with a copy of every event; the progress bar shows on a terminal only."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tracemalloc
from pathlib import Path

from agents.audit import log as auditlog
from agents.audit import report
from agents.audit.log import LogRead, Scope
from bench.memory import copies
from tests.test_auditlog import fleet_log

# A held AuditEvent costs well over a kilobyte (model, field dict, attributes, strings); the
# streamed fold keeps per event 32 bytes of hash plus its share of the chain and of its
# episode's figures: about 145 bytes in this log's shape (265 before episodes were kept as
# figures and strings shared).
MAX_BYTES_PER_EVENT = 200


def _archive(path: Path, size: int) -> Path:
    auditlog.export(LogRead("generated", copies(fleet_log(), size)), path)
    return path


def _peak_of_replay(archive: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        read = auditlog.read_archive(archive, stream=True)
        built = report.build(read, Scope(), detail=False)
        return tracemalloc.get_traced_memory()[1], built["events"]
    finally:
        tracemalloc.stop()


def test_a_streamed_replay_does_not_hold_the_events(tmp_path: Path) -> None:
    small, large = 2_000, 8_000
    peak_small, read_small = _peak_of_replay(_archive(tmp_path / "small.avro", small))
    peak_large, read_large = _peak_of_replay(_archive(tmp_path / "large.avro", large))
    assert (read_small, read_large) == (small, large)
    assert (peak_large - peak_small) / (large - small) < MAX_BYTES_PER_EVENT


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli", *args]


def test_the_progress_bar_shows_on_a_terminal_only(tmp_path: Path) -> None:
    size = len(fleet_log()) * 30  # whole copies: every chain complete, the log clean
    archive = _archive(tmp_path / "audit.avro", size)
    piped = subprocess.run(
        _cli("verify", "--archive", str(archive)), capture_output=True, text=True, check=False
    )
    assert piped.returncode == 0, piped.stderr
    assert f"verified {size} events" in piped.stdout
    assert piped.stderr == ""  # nothing drawn into a pipe

    leader, follower = pty.openpty()
    with subprocess.Popen(
        _cli("verify", "--archive", str(archive)),
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100"},
    ) as process:
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            drawn += chunk
        assert process.wait() == 0
    os.close(leader)
    assert b"reading the archive" in drawn
