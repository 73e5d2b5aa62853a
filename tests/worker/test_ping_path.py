"""One ping path: the processor hands every ping to the core's `decide_ping`, so the
steady-state test runs once per ping, steady or not, and a steady ping is applied without a
`Decision` or a state write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.processor import DictStore, Input, InputProcessor
from streams import decider
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy

CONNECTOR = "SAP-AR"


def ping(position: int, status: HealthStatus, position_text: str = "lsn-1") -> Input:
    message = HealthPing(
        connector_id=CONNECTOR,
        status=status,
        failure=None if status is HealthStatus.HEALTHY else "timeout",
        checked_at=T0 + position * 1000,
        position=position_text,
    )
    return Input(Unpacked(message, position, f"in/0/{position}", None, None), 0)


@pytest.fixture
def steady_tests(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The answers of the steady-state test, one per time it runs."""
    answers: list[bool] = []
    original: Callable[..., bool] = decider._repeats_steady_state

    def counted(*args: Any) -> bool:
        answers.append(original(*args))
        return answers[-1]

    monkeypatch.setattr(decider, "_repeats_steady_state", counted)
    return answers


def test_each_ping_is_tested_for_a_steady_state_once(steady_tests: list[bool]) -> None:
    policy = parse_policy({"defaults": {"flap_window": 3}})
    processor = InputProcessor(policy, DictStore(), partitions=1)
    for position in range(3):  # fills the flap window: not steady yet
        processor.write(processor.process([ping(position, HealthStatus.HEALTHY)]))
    assert steady_tests == [False, False, False]

    steady_tests.clear()
    outputs = processor.process([ping(3, HealthStatus.HEALTHY)])
    assert steady_tests == [True]
    assert not outputs.states  # only the liveness moved: nothing to write
    assert processor.liveness_of(CONNECTOR)[0] == T0 + 3000

    steady_tests.clear()
    outputs = processor.process([ping(4, HealthStatus.HEALTHY, position_text="lsn-2")])
    assert steady_tests == [False]  # judged in full, and tested only once
    assert list(outputs.states) == [CONNECTOR.encode()]
