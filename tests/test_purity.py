"""streams/ is the pure core: no I/O libraries, no clock, no global RNG."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "streams"
FORBIDDEN_MODULES = {
    "faust",
    "aiokafka",
    "fastavro",
    "mode",
    "confluent_kafka",
    "kafka",
    "aiohttp",
    "requests",
    "httpx",
    "urllib",
    "socket",
    "asyncio",
    "subprocess",
    "os",
    "random",
    "secrets",
    "uuid",
    "time",
    "threading",
    "rocksdict",
    "prometheus_client",
    "pathlib",
}
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
}
FORBIDDEN_NAMES = {"open", "input", "print", "uuid4", "uuid1"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        found += [
            f"{path.name}:{getattr(node, 'lineno', 0)} imports {n}"
            for n in names
            if n.split(".")[0] in FORBIDDEN_MODULES
        ]
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and ((func.value.id, func.attr) in FORBIDDEN_CALLS)
            ):
                found.append(f"{path.name}:{node.lineno} calls {func.value.id}.{func.attr}")
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAMES:
                found.append(f"{path.name}:{node.lineno} calls {func.id}")
    return found


def test_core_modules_are_pure() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    assert [v for f in files for v in _violations(f)] == []


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import aiokafka\nfrom datetime import datetime\nx = datetime.now()\n"
        "import random\nopen('f')\n"
    )
    assert len(_violations(bad)) == 4
