"""Arrows between the rooms that must never run: the worker runs without the admin page
(the CLI mounts it on the worker's web server) and without the helpers the tests and
benchmarks share (agents/testing/), the broker-free processor without a Kafka client, and
those helpers without a test-only library. Each is checked in a fresh interpreter, by what
importing a module loads. The benchmarks import nothing from tests/, read from their source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
        ("agents.worker.app", ("agents.dashboard", "agents.testing")),
        ("agents.cli", ("agents.testing",)),
        ("agents.testing.driver", ("pytest", "hypothesis", "tests")),
        ("agents.testing.kafka", ("pytest", "hypothesis", "tests")),
        ("agents.worker.processor", ("aiokafka", "faust", "mode", "agents.broker")),
    ],
)
def test_a_room_does_not_load_what_it_must_not_know(module: str, never: tuple[str, ...]) -> None:
    loaded = loaded_by(module)
    assert sorted(m for m in loaded if m.startswith(never)) == []


BENCH = Path(__file__).resolve().parents[1] / "bench"


def imported_modules(source: Path) -> set[str]:
    """Every module `source` imports, at any depth of its code (a function's own imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def test_the_benchmarks_import_nothing_from_the_tests() -> None:
    sources = sorted(BENCH.rglob("*.py"))
    assert sources, f"no benchmark sources under {BENCH}"
    offenders = [
        f"{path.relative_to(BENCH.parent)}: {module}"
        for path in sources
        for module in sorted(imported_modules(path))
        if module == "tests" or module.startswith("tests.")
    ]
    assert offenders == []
