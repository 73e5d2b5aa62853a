"""Delivers `NotificationRequest`s to the webhooks of the policy.

Payload (JSON, `Content-Type: application/json`), a contract for receivers:

    {"dedup_key", "kind", "summary", "connector_id", "tenant_id", "incident_id", "failure",
     "occurred_at" (ISO-8601 UTC), "cause_event_id", "target", "level",
     "links": {"status": "<worker>/status?tenant=<tenant>"}}

When the target has `secret_env`, the body is signed: header
`X-Connector-Recovery-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
Bounded retries with backoff (network errors, timeouts, 429, 5xx); the final outcome goes
back to the decider as a `NotificationResult`. A target without a webhook is the
`connector.notifications` topic itself: the request is delivered once the broker holds it.
Tenant isolation: a tenant's notification can only resolve to that tenant's own target.
A target of `type: alertmanager` gets the incident as an alert instead (alertmanager.py),
with the same bounded retries and the same outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable

import aiohttp

from agents.worker.alertmanager import AlertLinks, post_for_request
from agents.worker.http import post
from streams.models import NotificationRequest, NotificationResult
from streams.policy import AlertmanagerTarget, NotifyTarget, Policy
from streams.timefmt import iso_from_ms

SIGNATURE_HEADER = "X-Connector-Recovery-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def resolve_target(
    policy: Policy, request: NotificationRequest
) -> NotifyTarget | AlertmanagerTarget | None:
    """The policy's target for an audience; None = the topic is the delivery."""
    target = request.target
    if target == "platform_admin":
        return policy.platform_admin
    if target.startswith("tenant:"):
        tenant = target.removeprefix("tenant:")
        if tenant != request.tenant_id:
            raise ValueError(
                f"notification for tenant {request.tenant_id!r} addressed to {target!r}"
            )
        return policy.tenants.get(tenant)
    if target.startswith("escalation:"):
        level = int(target.removeprefix("escalation:"))
        if 1 <= level <= len(policy.escalation):
            return policy.escalation[level - 1].target
    raise ValueError(f"unknown notification target {target!r}")


def payload(request: NotificationRequest, status_url: str | None) -> bytes:
    body = {
        "dedup_key": request.dedup_key,
        "kind": request.notification_kind,
        "summary": request.summary,
        "connector_id": request.connector_id,
        "tenant_id": request.tenant_id,
        "incident_id": request.incident_id,
        "failure": request.failure,
        "occurred_at": iso_from_ms(request.occurred_at),
        "cause_event_id": request.cause_event_id,
        "target": request.target,
        "level": request.level,
        "links": {"status": status_url} if status_url else {},
    }
    return json.dumps(body, sort_keys=True).encode()


async def deliver(
    session: aiohttp.ClientSession,
    policy: Policy,
    request: NotificationRequest,
    clock: Callable[[], int],
    *,
    status_url: str | None = None,
    timeout_s: float = 5.0,
    attempts: int = 3,
    alert_links: AlertLinks | None = None,
) -> NotificationResult:
    try:
        target = resolve_target(policy, request)
    except ValueError as error:
        delivered, detail = False, str(error)
    else:
        if isinstance(target, AlertmanagerTarget):
            delivered, detail = await post_for_request(
                session, target, request, alert_links, attempts
            )
        elif target is None or target.webhook is None:
            delivered, detail = True, "delivered to the notifications topic"
        else:
            body = payload(request, status_url)
            headers = {"Content-Type": "application/json"}
            secret = os.environ.get(target.secret_env) if target.secret_env else None
            if secret:
                headers[SIGNATURE_HEADER] = signature(secret, body)
            outcome = await post(
                session,
                target.webhook,
                body,
                headers=headers,
                timeout_s=timeout_s,
                attempts=attempts,
            )
            delivered, detail = outcome.ok, outcome.detail
    return NotificationResult(
        dedup_key=request.dedup_key,
        connector_id=request.connector_id,
        incident_id=request.incident_id,
        target=request.target,
        level=request.level,
        delivered=delivered,
        detail=detail,
        finished_at=clock(),
    )
