from __future__ import annotations

from tests.kafka.conftest import (  # noqa: F401 - the same fixtures as tests/kafka
    http_stub,
    ns,
    workers,
)
