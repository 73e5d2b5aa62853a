import pytest

from agents.testing.driver import Driver


@pytest.fixture
def driver() -> Driver:
    return Driver()
