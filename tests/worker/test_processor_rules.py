"""Every given/when/then test of the core's rules (tests/core/test_rules.py), again, with
its inputs going through the InputProcessor over a dict store (no broker)."""

from __future__ import annotations

import pytest

from tests.core import test_rules
from tests.worker.driver import ProcessorDriver


@pytest.fixture(autouse=True)
def through_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_rules, "Driver", ProcessorDriver)


@pytest.fixture
def driver() -> ProcessorDriver:
    return ProcessorDriver()


globals().update(
    {name: test for name, test in vars(test_rules).items() if name.startswith("test_")}
)
