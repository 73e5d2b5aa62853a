"""Debian's `prometheus-alertmanager` on free ports, routing every alert (grouped by tenant)
to a webhook receiver and to an e-mail receiver; a real SMTP server (aiosmtpd) for it; and
Debian's `prometheus` scraping a worker with the project's alert rules loaded."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.kafka.harness import free_port, wait_for

BINARY = "/usr/bin/prometheus-alertmanager"
PROMETHEUS = "/usr/bin/prometheus"


def require(binary: str, package: str) -> None:
    """Skip without the binary on a developer's machine; in CI (where scripts/test.sh
    installs it) its absence is a failure."""
    if shutil.which(binary) is None:
        message = f"{binary} is missing: scripts/test.sh installs Debian's {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    text: str  # every text part, decoded


@dataclass
class SmtpSink:
    """An SMTP server on a free port that keeps every message it accepts."""

    messages: list[Mail] = field(default_factory=list)
    port: int = 0
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        parts = [
            part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
        ]
        with self._lock:
            self.messages.append(
                Mail(str(envelope.mail_from), list(envelope.rcpt_tos), "\n".join(parts))
            )
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self.messages)


CONFIG = """
global:
  resolve_timeout: 5m
  smtp_smarthost: "127.0.0.1:{smtp_port}"
  smtp_from: alertmanager@example.test
  smtp_require_tls: false
route:
  receiver: webhook
  group_by: [tenant]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: webhook
      continue: true
    - receiver: email
receivers:
  - name: webhook
    webhook_configs:
      - url: "{webhook_url}"
        send_resolved: true
  - name: email
    email_configs:
      - to: oncall@example.test
        send_resolved: true
"""


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our http URL
        return json.loads(answer.read())


def _answers(url: str, process: subprocess.Popen[bytes] | None, log: Path) -> bool:
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"{process.args!r} exited:\n" + log.read_text()[-3000:])
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our http URL
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Alertmanager:
    """The binary as a subprocess; `stop` and `start` again keep its port (its alerts are
    in memory: a restarted Alertmanager holds none until they are re-posted)."""

    def __init__(self, directory: Path, webhook_url: str, smtp_port: int) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "alertmanager.yml"
        self.config.write_text(CONFIG.format(smtp_port=smtp_port, webhook_url=webhook_url))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        args = [
            BINARY,
            f"--config.file={self.config}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip: a single instance, no second port
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 30, f"Alertmanager on {self.url} to be ready; log: {self.log}")
        return self

    def _ready(self) -> bool:
        return _answers(f"{self.url}/-/ready", self.process, self.log)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts` (active, silenced and inhibited alike)."""
        query = "&".join(f"filter={key}%3D%22{value}%22" for key, value in filters.items())
        found: list[dict[str, Any]] = _get_json(f"{self.url}/api/v2/alerts?{query}")
        return found


PROMETHEUS_CONFIG = """
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: connector-recovery
    static_configs: [{{targets: ["{worker}"]}}]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["{alertmanager}"]}}]}}]
"""


class Prometheus:
    """Scrapes one worker every second and evaluates `rules` as often, sending what fires
    to an Alertmanager."""

    def __init__(self, directory: Path, worker: str, rules: Path, alertmanager: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            PROMETHEUS_CONFIG.format(rules=rules, worker=worker, alertmanager=alertmanager)
        )
        self.port = free_port()
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        args = [
            PROMETHEUS,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(
            lambda: _answers(f"{self.url}/-/ready", self.process, self.log),
            60,
            f"Prometheus on {self.url} to be ready; log: {self.log}",
        )
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def alerts(self) -> list[dict[str, Any]]:
        """`GET /api/v1/alerts`: the rules' alerts, pending and firing."""
        found: list[dict[str, Any]] = _get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return found
