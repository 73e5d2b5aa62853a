"""Arrows between the rooms that must never run: the worker runs without the admin page
(the CLI mounts it on the worker's web server), and the broker-free processor without a
Kafka client. Each is checked in a fresh interpreter, by what importing a module loads."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_by(module: str) -> set[str]:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(shown.stdout.split())


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("agents.worker.app", ("agents.dashboard",)),
        ("agents.worker.processor", ("aiokafka", "faust", "mode", "agents.broker")),
    ],
)
def test_a_room_does_not_load_what_it_must_not_know(module: str, never: tuple[str, ...]) -> None:
    loaded = loaded_by(module)
    assert sorted(m for m in loaded if m.startswith(never)) == []
