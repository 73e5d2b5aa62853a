"""CloudEvents (Kafka protocol binding, binary content mode) on every record the worker
writes, read back with the CloudEvents SDK's own Kafka binding."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.kafka import KafkaMessage, from_binary

from agents.settings import Settings
from agents.wire.codec import registry
from streams.timefmt import iso_from_ms
from tests.kafka.harness import Namespace, Worker, read_records

pytestmark = pytest.mark.kafka

SOURCE = "https://ops.example.com/connector-recovery/eu-1"


def _identity(data: Any) -> Any:
    return data


def _cloud_event(record: Any) -> Any:
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    return from_binary(message, data_unmarshaller=_identity)


def _expected(name: str, body: dict[str, Any]) -> tuple[str, str, int]:
    """(id, type, time) that the Avro body says the headers must carry."""
    if name == "AuditEvent":
        return body["event_id"], body["type"], body["occurred_at"]
    if name == "RecoveryRequest":
        return body["request_id"], "connector.recovery.requested", body["requested_at"]
    return body["dedup_key"], "notification.requested", body["occurred_at"]


def test_every_record_carries_cloudevents_headers_matching_its_avro_body(
    ns: Namespace,
) -> None:
    worker = Worker(ns, env={"CR_CLOUDEVENTS_SOURCE": SOURCE}).start()
    try:
        published = ns.cli("publish", "--connector", "CE-1", "--status", "unhealthy")
        assert published.returncode == 0, published.stderr
        # One detection yields an audit event, a recovery request and a notification request.
        topics = {
            ns.topics.audit: "AuditEvent",
            ns.topics.recovery_requests: "RecoveryRequest",
            ns.topics.notifications: "NotificationRequest",
        }
        records = {topic: read_records(ns.bootstrap, topic, 1, 60) for topic in topics}
    finally:
        worker.kill()
    reg = registry()
    for topic, name in topics.items():
        assert records[topic], f"nothing on {topic}"
        for record in records[topic]:
            event = _cloud_event(record)
            decoded_name, body = reg.decode_any(record.value)
            assert decoded_name == name
            event_id, event_type, occurred_at = _expected(name, body)
            assert event["specversion"] == "1.0"
            assert event["id"] == event_id
            assert event["type"] == event_type
            assert event["time"] == iso_from_ms(occurred_at)
            assert event["subject"] == body["connector_id"] == record.key.decode()
            assert event["source"] == SOURCE
            assert event["datacontenttype"] == "application/avro"
            assert event["dataschema"] == f"urn:avro:crc-64-avro:{record.value[2:10].hex()}"
            assert event.get_data() == record.value  # the body is the Avro record, unchanged


def test_the_source_defaults_to_a_urn_naming_the_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CR_CLOUDEVENTS_SOURCE", raising=False)
    monkeypatch.setenv("CR_APP_ID", "billing-eu")
    assert Settings.from_env().event_source == "urn:connector-recovery:billing-eu"
    monkeypatch.setenv("CR_CLOUDEVENTS_SOURCE", SOURCE)
    assert Settings.from_env().event_source == SOURCE
