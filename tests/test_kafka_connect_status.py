"""The probe's pure mapping: Kafka Connect status JSON → health verdicts (no broker, no
Connect). The JSON shapes are those of `GET /connectors?expand=status&expand=info` (4.0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.connect.status import Memory, Verdict, assess, failure_of, gone
from streams.models import HealthStatus
from streams.policy import parse_policy

SINK_TRACE = (
    "org.apache.kafka.connect.errors.ConnectException: Couldn't find or create file "
    "'/tmp/x/missing/out.txt' for FileStreamSinkTask\n"
    "\tat org.apache.kafka.connect.file.FileStreamSinkTask.start(FileStreamSinkTask.java:80)\n"
    "Caused by: java.nio.file.NoSuchFileException: /tmp/x/missing/out.txt\n"
)
CONFIG_TRACE = (
    "org.apache.kafka.connect.errors.ConnectException: Failed to start task\n"
    "\tat org.apache.kafka.connect.runtime.WorkerTask.doStart(WorkerTask.java:12)\n"
    "Caused by: org.apache.kafka.common.config.ConfigException: Missing required "
    'configuration "topic" which has no default value.\n'
)
GRACE = 60_000


def entry(
    connector: str = "RUNNING",
    tasks: tuple[tuple[str, str | None], ...] = (("RUNNING", None),),
    config: dict[str, str] | None = None,
) -> dict[str, Any]:
    def unit(state: str, trace: str | None, **extra: Any) -> dict[str, Any]:
        found = {"state": state, "worker_id": "127.0.0.1:8083", **extra}
        return {**found, "trace": trace} if trace else found

    return {
        "status": {
            "name": "orders-sink",
            "connector": unit(connector, None),
            "tasks": [unit(state, trace, id=i) for i, (state, trace) in enumerate(tasks)],
            "type": "sink",
        },
        "info": {"name": "orders-sink", "config": config or {}, "tasks": [], "type": "sink"},
    }


def verdict_of(item: dict[str, Any], previous: Memory | None = None, now: int = 0) -> Any:
    return assess("orders-sink", item, previous, now, grace_ms=GRACE)


def test_running_connector_and_tasks_are_healthy() -> None:
    found = verdict_of(entry())
    assert found.verdict.status is HealthStatus.HEALTHY
    assert found.verdict.failure is None
    assert found.connector_type == "sink"


def test_a_failed_task_is_unhealthy_with_short_class_and_first_message_line() -> None:
    found = verdict_of(entry(tasks=(("RUNNING", None), ("FAILED", SINK_TRACE))))
    assert found.verdict.status is HealthStatus.UNHEALTHY
    assert found.verdict.failure == (
        "ConnectException: Couldn't find or create file '/tmp/x/missing/out.txt' "
        "for FileStreamSinkTask"
    )
    assert found.verdict.retryable is True
    assert found.verdict.message == "FAILED: task 1 on 127.0.0.1:8083"


def test_a_configuration_error_anywhere_in_the_trace_is_not_retryable() -> None:
    found = verdict_of(entry(tasks=(("FAILED", CONFIG_TRACE),)))
    assert found.verdict.failure == "ConnectException: Failed to start task"
    assert found.verdict.retryable is False


@pytest.mark.parametrize(
    ("first_line", "retryable"),
    [
        ("org.apache.kafka.common.config.ConfigException: Invalid value", False),
        ("java.lang.ClassNotFoundException: com.example.Missing", False),
        ("org.apache.kafka.common.errors.TopicAuthorizationException: Not authorized", False),
        ("org.apache.kafka.common.errors.SaslAuthenticationException: bad password", False),
        ("org.apache.kafka.connect.errors.RetriableException: timeout", True),
        ("java.io.IOException: Connection reset by peer", True),
        # a message that merely mentions a config exception is not one
        ("java.lang.IllegalStateException: see ConfigException docs", True),
    ],
)
def test_the_retryable_rule(first_line: str, retryable: bool) -> None:
    assert failure_of(first_line + "\n\tat x.y(Z.java:1)")[1] is retryable


def test_a_failure_without_a_trace_or_a_message() -> None:
    assert failure_of(None) == ("unknown: no trace reported", True)
    assert failure_of("java.lang.NullPointerException\n\tat x") == ("NullPointerException", True)


def test_a_failed_connector_comes_before_its_tasks() -> None:
    item = entry(tasks=(("FAILED", SINK_TRACE),))
    item["status"]["connector"].update(state="FAILED", trace=CONFIG_TRACE)
    found = verdict_of(item)
    assert found.verdict.failure == "ConnectException: Failed to start task"
    # one failed unit with a configuration error makes the whole failure not retryable
    assert found.verdict.retryable is False
    assert found.verdict.message == "FAILED: connector on 127.0.0.1:8083, task 0 on 127.0.0.1:8083"


def test_tenant_comes_from_the_configured_key() -> None:
    item = entry(config={"tenant": "acme", "customer": "globex"})
    assert verdict_of(item).tenant_id == "acme"
    assert assess("c", item, None, 0, grace_ms=GRACE, tenant_key="customer").tenant_id == "globex"
    assert assess("c", item, None, 0, grace_ms=GRACE, tenant_key="owner").tenant_id is None


def test_restarting_keeps_the_previous_verdict_so_a_restart_is_no_recovery() -> None:
    failed = verdict_of(entry(tasks=(("FAILED", SINK_TRACE),)), now=1_000)
    restarting = verdict_of(entry(tasks=(("RESTARTING", SINK_TRACE),)), failed.memory, 2_000)
    assert restarting.verdict.status is HealthStatus.UNHEALTHY
    assert restarting.verdict.failure == failed.verdict.failure
    assert restarting.verdict.message == "task 0 RESTARTING (previous verdict kept)"
    running = verdict_of(entry(), restarting.memory, 3_000)
    assert running.verdict.status is HealthStatus.HEALTHY


def test_a_rebalance_of_a_healthy_connector_is_not_a_failure() -> None:
    healthy = verdict_of(entry(), now=0)
    moving = verdict_of(entry(tasks=(("UNASSIGNED", None),)), healthy.memory, GRACE - 1)
    assert moving.verdict.status is HealthStatus.HEALTHY


def test_unassigned_beyond_the_grace_period_is_a_retryable_failure() -> None:
    healthy = verdict_of(entry(), now=0)
    first = verdict_of(entry(tasks=(("UNASSIGNED", None),)), healthy.memory, 10_000)
    later = verdict_of(entry(tasks=(("UNASSIGNED", None),)), first.memory, 10_000 + GRACE)
    assert later.verdict.status is HealthStatus.UNHEALTHY
    assert later.verdict.failure == "Unassigned: task 0 UNASSIGNED for 60 s"
    assert later.verdict.retryable is True
    # the clock of the transition restarts once the connector settles
    settled = verdict_of(entry(), later.memory, 10_000 + GRACE + 1)
    assert settled.memory == Memory(settled=settled.verdict)


def test_a_new_connector_still_being_assigned_is_not_reported_yet() -> None:
    found = verdict_of(entry(connector="UNASSIGNED", tasks=()), None, 5_000)
    assert found.verdict is None
    assert found.memory == Memory(settled=None, transitional_since_ms=5_000)


@pytest.mark.parametrize("state", ["PAUSED", "STOPPED"])
def test_paused_and_stopped_are_operator_intent_not_failures(state: str) -> None:
    tasks: tuple[tuple[str, str | None], ...] = () if state == "STOPPED" else (("PAUSED", None),)
    fresh = verdict_of(entry(connector=state, tasks=tasks))
    assert fresh.verdict.status is HealthStatus.HEALTHY
    assert fresh.verdict.message == f"{state} by an operator"
    # ... and pausing a failed connector does not make its failure go away
    failed = Memory(settled=Verdict(HealthStatus.UNHEALTHY, "ConnectException: x", True))
    kept = verdict_of(entry(connector=state, tasks=tasks), failed)
    assert kept.verdict.status is HealthStatus.UNHEALTHY
    assert kept.verdict.failure == "ConnectException: x"


def test_deleted_connectors_are_named() -> None:
    assert gone({"a", "b", "c"}, {"b"}) == ["a", "c"]


def test_kafka_connect_action_defaults_to_the_connector_id() -> None:
    policy = parse_policy(
        {
            "defaults": {"recovery_action": {"type": "kafka_connect", "url": "http://c:8083"}},
            "connectors": {
                "renamed": {
                    "recovery_action": {
                        "type": "kafka_connect",
                        "url": "http://c:8083",
                        "connector": "real-name",
                    }
                }
            },
        }
    )
    action = policy.for_connector("orders-sink").recovery_action
    assert action.type == "kafka_connect"
    assert action.connector_name("orders-sink") == "orders-sink"
    renamed = policy.for_connector("renamed").recovery_action
    assert renamed.type == "kafka_connect"
    assert renamed.connector_name("renamed") == "real-name"


def test_the_example_connect_policy_covers_every_connector() -> None:
    from agents.policyfile import load_policy  # noqa: PLC0415 - only this test reads files

    example = Path(__file__).resolve().parents[1] / "examples" / "kafka-connect-policy.yaml"
    action = load_policy(example).for_connector("any-connector").recovery_action
    assert action.type == "kafka_connect"
    assert action.connector_name("any-connector") == "any-connector"
