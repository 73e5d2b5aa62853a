from __future__ import annotations

from tests.kafka.conftest import http_stub  # noqa: F401 - the same fixture as tests/kafka
