"""agents/kafka_internals.py is the one door to Faust's and aiokafka's private names: each
name it lists still exists in the installed libraries, it lists every one it uses, and no
other module of the project names one."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.kafka_internals import PRIVATE_NAMES, PrivateName

ROOT = Path(__file__).resolve().parents[1]
DOOR = ROOT / "agents" / "kafka_internals.py"


@pytest.mark.parametrize("name", PRIVATE_NAMES, ids=lambda n: f"{n.owner}.{n.attribute}")
def test_each_private_name_exists_in_the_installed_library(name: PrivateName) -> None:
    module = importlib.import_module(name.module)
    if name.owner is None:
        assert hasattr(module, name.attribute)
        return
    owner = getattr(module, name.owner)
    if name.assigned_in is None:
        assert hasattr(owner, name.attribute)
    else:
        source = inspect.getsource(getattr(owner, name.assigned_in))
        assert f"self.{name.attribute} = " in source


def test_the_door_lists_every_private_name_it_uses() -> None:
    used = {
        node.attr
        for node in ast.walk(ast.parse(DOOR.read_text()))
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
    }
    used |= {"_fetcher"}  # read with getattr, so the consumer may not have one yet
    assert used == {name.attribute for name in PRIVATE_NAMES}


def test_no_other_module_names_a_private_name_of_faust_or_aiokafka() -> None:
    names = "|".join(re.escape(name.attribute) for name in PRIVATE_NAMES)
    # `self._client` and the like are the project's own attributes
    pattern = re.compile(rf"(?<!self)\.({names})\b|import ({names})\b|\"({names})\"")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for directory in ("agents", "bench", "streams")
        for path in sorted((ROOT / directory).rglob("*.py"))
        if path != DOOR and "vendor" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_the_broker_clients_load_no_faust() -> None:
    """The command line's clients go through the door too, and start without Faust."""
    probe = (
        "import sys, agents.broker.client, agents.broker.producer; print('faust' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == "False"
