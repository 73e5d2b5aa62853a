"""A JVM this project started (the local broker, the local Connect worker): found again by
its pid file, and only while that pid still runs our main class with our config file, so a
recycled pid is never signalled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


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
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running_pid(pid_file, main_class, config_file):
        time.sleep(0.2)
    if running_pid(pid_file, main_class, config_file) is not None:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid
