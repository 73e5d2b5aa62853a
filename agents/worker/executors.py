"""Recovery executors: act on a `RecoveryRequest` as the connector's policy says.

* `command_topic` — nothing to do here: the request on `connector.recovery.requests` is the
  command a connector runtime consumes; it answers on `connector.recovery.results`.
* `webhook` — POST the request (JSON) to the URL; 2xx = accepted.
* `kafka_connect` — Kafka Connect REST (KIP-745):
  `POST {url}/connectors/{name}/restart?includeTasks=true&onlyFailed=true`; 202/204 = accepted.
  `name` is the action's `connector`, by default the connector id.

The action's success never completes a recovery; only a healthy ping does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from urllib.parse import quote

import aiohttp

from agents.worker.http import HttpOutcome, post
from streams.models import RecoveryRequest, RecoveryResult
from streams.policy import CommandTopicAction, KafkaConnectAction, Policy, WebhookAction


def kafka_connect_restart_url(base_url: str, connector: str) -> str:
    return (
        f"{base_url.rstrip('/')}/connectors/{quote(connector, safe='')}/restart"
        "?includeTasks=true&onlyFailed=true"
    )


async def execute(
    session: aiohttp.ClientSession,
    policy: Policy,
    request: RecoveryRequest,
    clock: Callable[[], int],
) -> RecoveryResult | None:
    """Run the action; None when the runtime itself answers (command_topic)."""
    action = policy.for_connector(request.connector_id).recovery_action
    if isinstance(action, CommandTopicAction):
        return None
    if clock() > request.deadline:
        outcome = HttpOutcome(False, None, "request expired before it could run", 0)
    elif isinstance(action, WebhookAction):
        headers = {"Content-Type": "application/json"}
        secret = os.environ.get(action.secret_env) if action.secret_env else None
        body = json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()
        if secret:
            from agents.worker.notifier import signature  # noqa: PLC0415 - one signing scheme

            headers["X-Connector-Recovery-Signature"] = signature(secret, body)
        outcome = await post(session, action.url, body, headers=headers, timeout_s=action.timeout_s)
    elif isinstance(action, KafkaConnectAction):
        url = kafka_connect_restart_url(action.url, action.connector_name(request.connector_id))
        # Connect's REST resources consume JSON only: without this header aiohttp labels the
        # empty body application/octet-stream and Connect answers 415 Unsupported Media Type.
        outcome = await post(
            session,
            url,
            b"",
            headers={"Content-Type": "application/json"},
            timeout_s=action.timeout_s,
            accept=(202, 204),
        )
    else:  # pragma: no cover - the policy model admits no other type
        raise TypeError(f"unknown recovery action {action!r}")
    return RecoveryResult(
        request_id=request.request_id,
        connector_id=request.connector_id,
        incident_id=request.incident_id,
        attempt=request.attempt,
        ok=outcome.ok,
        detail=outcome.detail,
        finished_at=clock(),
    )
