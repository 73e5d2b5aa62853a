"""Bad input goes to the dead-letter topic with the reason; the worker keeps running."""

from __future__ import annotations

import pytest

from agents.wire.codec import registry
from tests.kafka.harness import Namespace, Worker, produce_raw, read_records, wait_for_audit

pytestmark = pytest.mark.kafka


def test_malformed_pings_are_dead_lettered_and_good_ones_still_processed(
    ns: Namespace, worker: Worker
) -> None:
    codec = registry().codec("HealthPing")
    good = codec.encode(
        {
            "connector_id": "GOOD-1",
            "tenant_id": None,
            "status": "UNHEALTHY",
            "failure": "timeout",
            "retryable": True,
            "checked_at": 1_759_148_400_000,
            "latency_ms": None,
            "message": None,
            "position": None,
        }
    )
    blank_id = codec.encode(
        {
            "connector_id": " ",
            "tenant_id": None,
            "status": "HEALTHY",
            "failure": None,
            "retryable": True,
            "checked_at": 1_759_148_400_000,
            "latency_ms": None,
            "message": None,
            "position": None,
        }
    )
    year_1970 = codec.encode(
        {
            "connector_id": "X",
            "tenant_id": None,
            "status": "HEALTHY",
            "failure": None,
            "retryable": True,
            "checked_at": 5,
            "latency_ms": None,
            "message": None,
            "position": None,
        }
    )
    bad = {
        b"random": b"\x00\x01garbage",
        b"truncated": good[:-5],
        b"fingerprint": b"\xc3\x01" + b"\xff" * 8 + good[10:],
        b"blank-id": blank_id,
        b"old-time": year_1970,
        b"null": None,
        b"audit-on-health": registry()
        .codec("Tick")
        .encode({"connector_id": "X", "now": 1_759_148_400_000}),
    }
    produce_raw(ns.bootstrap, ns.topics.health, [*bad.items(), (b"GOOD-1", good)])

    dead = read_records(ns.bootstrap, ns.topics.dlq, len(bad), timeout_s=30)
    reasons = {r.key: dict(r.headers)["reason"].decode() for r in dead}
    assert set(reasons) == set(bad)
    assert "C3 01" in reasons[b"random"]
    assert "corrupt HealthPing" in reasons[b"truncated"]
    assert "unknown schema fingerprint" in reasons[b"fingerprint"]
    assert "connector_id" in reasons[b"blank-id"]
    assert "checked_at" in reasons[b"old-time"]
    assert "null value" in reasons[b"null"]
    assert "Tick on a topic of HealthPing" in reasons[b"audit-on-health"]
    for record in dead:  # the original bytes are kept, with where they came from
        headers = dict(record.headers)
        assert headers["source.topic"].decode() == ns.topics.health
        assert record.value == bad[record.key]

    events = wait_for_audit(ns, lambda ev: len(ev) >= 1, 30, "the good ping's detection")
    assert events[0].connector_id == "GOOD-1"
    assert worker.process is not None
    assert worker.process.poll() is None
