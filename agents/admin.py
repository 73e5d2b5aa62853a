"""The Platform Admin's commands: publish an `AdminCommand`, wait for the decider's answer
on the audit topic (an event whose `attributes.command_id` is the command's id)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from agents.broker.client import reader, start_client, topic_partitions
from agents.broker.producer import publish_records
from agents.settings import Settings
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from streams.evidence import CommandAnswer, CommandRejected, read
from streams.grouping import is_outage_key
from streams.models import AdminAction, AdminCommand, AuditEvent


def connector_of_incident(incident_id: str) -> str:
    """`{connector_id}:{sequence}` → connector_id (connector ids may contain ':')."""
    connector, _, sequence = incident_id.rpartition(":")
    if not connector or not sequence.isdigit():
        raise ValueError(f"not an incident id: {incident_id!r} (expected CONNECTOR:SEQUENCE)")
    return connector


def outage_target(target: str) -> tuple[str, str | None]:
    """An outage's id `outage:<group>:<n>` → (its key, the id); its key `outage:<group>`
    alone → (the key, None): whichever outage of the group is open."""
    key, _, number = target.rpartition(":")
    if number.isdigit() and is_outage_key(key):
        return key, target
    return target, None


def build_command(
    action: AdminAction,
    target: str,
    actor: str,
    *,
    reason: str | None = None,
    until_ms: int | None = None,
) -> AdminCommand:
    """The command for `target`: an incident id (ack, resolve), a connector id (the
    others), or an outage's id or key (any: the outage answers, docs/outages.md)."""
    if is_outage_key(target):
        connector, incident = outage_target(target)
    else:
        incident = target if action in (AdminAction.ACKNOWLEDGE, AdminAction.RESOLVE) else None
        connector = connector_of_incident(target) if incident else target
    return AdminCommand(
        command_id=str(uuid.uuid4()),
        action=action,
        connector_id=connector,
        incident_id=incident,
        actor=actor,
        reason=reason,
        until=until_ms,
        issued_at=time.time_ns() // 1_000_000,
    )


def actor_for(settings: Settings, requested: str | None) -> str:
    """With SASL the actor is the authenticated Kafka user (whom the broker's ACLs let write
    commands), never a free choice; without it, `--actor` or $USER."""
    username = settings.security.username if settings.security.sasl else None
    if username is not None:
        if requested is not None and requested != username:
            raise ValueError(
                f"--actor {requested!r} differs from the authenticated Kafka user {username!r};"
                " with SASL the actor is the user"
            )
        return username
    return requested or os.environ.get("USER") or "unknown"


async def send_and_wait(
    settings: Settings, command: AdminCommand, timeout_s: float
) -> list[AuditEvent]:
    """Every audit event answering the command (empty if none came within the timeout)."""
    consumer = reader(settings)
    await start_client(consumer)
    try:
        tps = await topic_partitions(consumer, settings.topics.audit)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)  # only answers written after this point
        for tp in tps:
            consumer.seek(tp, ends[tp])
        await publish_records(
            settings,
            settings.topics.admin,
            "AdminCommand",
            [(command.connector_id, command.model_dump(mode="json"))],
        )
        deadline = time.monotonic() + timeout_s
        answers: list[AuditEvent] = []
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    event = decode_audit(registry(), record.value)
                    if read(CommandAnswer, event.attributes).command_id == command.command_id:
                        answers.append(event)
            if answers and settle_until is None:
                settle_until = time.monotonic() + 0.5  # the rest of the same decision
        return answers
    finally:
        await consumer.stop()


def rejection(answer: AuditEvent) -> str:
    """Why the worker rejected a command (`answer` is its `command.rejected` event)."""
    return read(CommandRejected, answer.attributes).rejection


def run(settings: Settings, command: AdminCommand, timeout_s: float) -> list[AuditEvent]:
    return asyncio.run(send_and_wait(settings, command, timeout_s))
