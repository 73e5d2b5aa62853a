"""SASL_SSL (SCRAM-SHA-512) with a test-made CA, and ACLs, on a second local broker.

The broker keeps a PLAINTEXT listener for local administration (its principal is the super
user); every client of ours connects to the SASL_SSL listener as a SCRAM user.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

# The public names live in these modules; confluent_kafka.admin re-exports them without
# `__all__`, which mypy's strict mode does not accept as an export.
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from agents.broker.local import Broker
from streams.models import AuditEvent, EventType
from tests.kafka.harness import (
    Namespace,
    Worker,
    free_broker_port,
    free_port,
    read_audit,
    read_records,
    wait_for,
)
from tests.kafka.httpstub import HttpStub
from tests.security.tls import make_pki

pytestmark = pytest.mark.kafka

# Who is who. Passwords are made per run; the secrets test greps for them afterwards.
WORKER, ADMIN, OPERATOR, INTRUDER = "cr-worker", "platform-admin", "operator", "intruder"
POLICY = f"""
admins: [{ADMIN}]
defaults:
  failure_threshold: 1
  max_retries: 0
"""


@dataclass(frozen=True)
class SecureKafka:
    plain: str  # the administration listener (tests read results through it)
    secure: str  # SASL_SSL
    ca_file: Path
    passwords: dict[str, str]
    admin: AdminClient

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.secure,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password if password is not None else self.passwords[user],
            "KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def allow(self, principal: str, topic: str, *operations: AclOperation) -> None:
        bindings = [
            AclBinding(
                ResourceType.TOPIC,
                topic,
                ResourcePatternType.LITERAL,
                f"User:{principal}",
                "*",
                operation,
                AclPermissionType.ALLOW,
            )
            for operation in operations
        ]
        for future in self.admin.create_acls(bindings).values():
            future.result(timeout=30)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    port = free_broker_port()
    broker = Broker(
        port, sasl_port=free_broker_port(frozenset({port, port + 1})), keystore=pki.keystore
    )
    shutil.rmtree(broker.data, ignore_errors=True)
    broker.up(timeout_s=180)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        passwords = {
            user: secrets.token_urlsafe(18) for user in (WORKER, ADMIN, OPERATOR, INTRUDER)
        }
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
            )
            for user, password in passwords.items()
        ]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(timeout=30)
        yield SecureKafka(
            broker.bootstrap, f"127.0.0.1:{broker.sasl_port}", pki.ca_cert, passwords, admin
        )
    finally:
        broker.down()
        shutil.rmtree(broker.data, ignore_errors=True)


@pytest.fixture
def secured(secure_kafka: SecureKafka, tmp_path: Path) -> Iterator[tuple[Namespace, Worker]]:
    """A worker over SASL_SSL; only the platform admin and the operator may write commands."""
    ns = Namespace(secure_kafka.secure, tmp_path)
    admin_topic = ns.topics.admin
    secure_kafka.allow(ADMIN, admin_topic, AclOperation.WRITE)
    secure_kafka.allow(OPERATOR, admin_topic, AclOperation.WRITE)
    secure_kafka.allow(WORKER, admin_topic, AclOperation.READ, AclOperation.DESCRIBE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    worker = Worker(ns, policy=policy, env=secure_kafka.env(WORKER)).start(ready_timeout_s=120)
    yield ns, worker
    worker.kill()


# Everything our CLI printed in this module: the secrets test greps it.
CLI_OUTPUT: list[str] = []


def as_user(
    ns: Namespace, kafka: SecureKafka, user: str, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = ns.cli(*args, timeout_s=90, **kafka.env(user, password))
    CLI_OUTPUT.append(result.stdout + result.stderr)
    return result


def test_every_client_connects_over_sasl_ssl_and_acls_gate_commands(
    secure_kafka: SecureKafka, secured: tuple[Namespace, Worker]
) -> None:
    ns, _worker = secured
    published = as_user(
        ns, secure_kafka, WORKER, "publish", "--connector", "SEC-1", "--status", "unhealthy",
        "--tenant", "acme", "--failure", "timeout",
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    plain = Namespace(secure_kafka.plain, ns.tmp, tag=ns.tag)
    wait_for(
        lambda: any(
            e.type is EventType.FAILURE_DETECTED
            for e in read_audit(plain.bootstrap, plain.topics.audit, timeout_s=1)
        ),
        60,
        "the failure to be detected over SASL_SSL",
    )
    until = "2099-01-01T00:00:00Z"

    # The platform admin: the actor is the authenticated user, not a flag.
    accepted = as_user(ns, secure_kafka, ADMIN, "silence", "SEC-1", "--until", until)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    forged = as_user(
        ns, secure_kafka, ADMIN, "silence", "SEC-1", "--until", until, "--actor", "ceo"
    )
    assert forged.returncode == 2
    assert "authenticated Kafka user" in forged.stderr

    # Allowed by Kafka to write, but not an admin in the policy: rejected on the audit topic.
    rejected = as_user(ns, secure_kafka, OPERATOR, "silence", "SEC-1", "--until", until)
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "rejected" in rejected.stdout

    # No ACL to write commands: the broker refuses, the CLI says so promptly.
    started = time.monotonic()
    refused = as_user(ns, secure_kafka, INTRUDER, "silence", "SEC-1", "--until", until)
    assert refused.returncode == 2
    assert "Authorization" in refused.stderr, refused.stderr
    assert time.monotonic() - started < 60

    events = read_audit(plain.bootstrap, plain.topics.audit, timeout_s=2)
    silenced = [e for e in events if e.type is EventType.SILENCED]
    assert [e.actor for e in silenced] == [ADMIN]
    rejections = [e for e in events if e.type is EventType.COMMAND_REJECTED]
    assert [e.actor for e in rejections] == [OPERATOR]

    replay = as_user(ns, secure_kafka, WORKER, "replay", "--quiet")
    assert replay.returncode == 0, replay.stderr
    assert "failures 1" in replay.stdout


def test_wrong_credentials_are_a_clear_error_not_a_hang(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    ns = Namespace(secure_kafka.secure, tmp_path)
    wrong = "not-the-password-" + secure_kafka.passwords[WORKER][:4]
    for command in (("replay", "--quiet"), ("publish", "--connector", "X", "--status", "healthy")):
        started = time.monotonic()
        result = as_user(ns, secure_kafka, WORKER, *command, password=wrong)
        elapsed = time.monotonic() - started
        assert result.returncode == 2, result.stdout + result.stderr
        assert "authentication failed" in result.stderr.lower(), result.stderr
        assert wrong not in result.stdout + result.stderr
        assert elapsed < 60, f"{command[0]} took {elapsed:.0f}s to give up"
    worker = Worker(ns, "bad-login", env=secure_kafka.env(WORKER, wrong))
    with pytest.raises(RuntimeError, match="exited"):
        worker.start(ready_timeout_s=90)
    assert "authentication failed" in worker.output().lower()
    assert wrong not in worker.output()


def test_secrets_never_appear_in_logs_events_reports_or_errors(
    secure_kafka: SecureKafka, tmp_path: Path, http_stub: HttpStub
) -> None:
    token = "tok-" + secrets.token_urlsafe(12)
    hmac_secret = "hmac-" + secrets.token_urlsafe(12)
    closed = free_port()  # nothing listens there: the tenant's endpoint refuses
    http_stub.statuses["/hook/"] = 503
    ns = Namespace(secure_kafka.secure, tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
defaults: {{failure_threshold: 1, max_retries: 0}}
tenants:
  acme: {{webhook: "{http_stub.url}/hook/{token}?token={token}", secret_env: ACME_SECRET}}
  gone: {{webhook: "http://127.0.0.1:{closed}/hook/{token}?token={token}"}}
platform_admin: {{webhook: "{http_stub.url}/platform/{token}"}}
""")
    env = {**secure_kafka.env(WORKER), "ACME_SECRET": hmac_secret}
    worker = Worker(ns, "leaky", policy=policy, env=env).start(ready_timeout_s=120)
    try:
        for connector, tenant in (("LEAK-1", "acme"), ("LEAK-2", "gone")):
            sent = as_user(
                ns, secure_kafka, WORKER, "publish", "--connector", connector,
                "--status", "unhealthy", "--tenant", tenant, "--failure", "timeout",
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        plain = Namespace(secure_kafka.plain, ns.tmp, tag=ns.tag)

        def failed_twice() -> list[AuditEvent] | None:
            events = read_audit(plain.bootstrap, plain.topics.audit, timeout_s=1)
            failed = [e for e in events if e.type is EventType.NOTIFICATION_FAILED]
            return events if len(failed) >= 2 else None

        wait_for(failed_twice, 90, "both tenant notifications to fail")
        as_user(ns, secure_kafka, WORKER, "replay", "--quiet", password="wrong-" + token)
        for fmt in ("json", "md", "html"):
            out = tmp_path / f"report.{fmt}"
            made = as_user(
                ns, secure_kafka, WORKER, "report", "--quiet", "--format", fmt, "--out", str(out)
            )
            assert made.returncode == 0, made.stderr
    finally:
        worker.kill()
    plain = Namespace(secure_kafka.plain, ns.tmp, tag=ns.tag)
    produced = [
        record.value or b""
        for topic in (
            plain.topics.audit, plain.topics.notifications, plain.topics.dlq,
            plain.topics.recovery_requests, f"{plain.app_id}-inputs",
        )
        for record in read_records(plain.bootstrap, topic, timeout_s=2)
    ]  # fmt: skip
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"]
    haystack = b"\n".join(
        [*produced, *files, worker.output().encode(), *(o.encode() for o in CLI_OUTPUT)]
    )
    assert b"HTTP 503" in haystack or b"Connect" in haystack  # the failures were recorded
    wanted = {token, hmac_secret, *secure_kafka.passwords.values()}
    leaked = {secret for secret in wanted if secret.encode() in haystack}
    assert not leaked, f"{len(leaked)} secret(s) leaked"
