import pytest

from tests.core.driver import Driver


@pytest.fixture
def driver() -> Driver:
    return Driver()
