from __future__ import annotations

from tests.kafka.conftest import http_stub, ns  # noqa: F401 - the same fixtures as tests/kafka
