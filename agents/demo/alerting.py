"""The demo's Alertmanager: when Debian's `prometheus-alertmanager` is installed, the demo
pages the Platform Admin through it (docs/alertmanager.md) instead of a bare webhook.

It runs on a free port with no clustering and its data in the demo's directory, groups
alerts by tenant and hands them to the demo's webhook inbox (path `/alertmanager`), so the
closing screen counts Alertmanager's grouped notifications beside the tenants' webhooks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = "prometheus-alertmanager"
READY_WITHIN_S = 15.0

CONFIG = """
route:
  receiver: inbox
  group_by: [tenant]
  group_wait: 2s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: inbox
    webhook_configs: [{{url: "{inbox}/alertmanager", send_resolved: true}}]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoAlertmanager:
    def __init__(self, home: Path, inbox_url: str) -> None:
        self.home = home
        self.inbox_url = inbox_url
        self.port = _free_port()
        self.log = home / "alertmanager.log"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which(BINARY) is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> bool:
        """Whether it answers; if not, its log says why and the demo goes on without it."""
        binary = shutil.which(BINARY)
        if binary is None:
            return False
        config = self.home / "alertmanager.yml"
        config.write_text(CONFIG.format(inbox=self.inbox_url))
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={self.home / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the binary on PATH, our arguments, no shell
                args, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self._ready():
                return True
            time.sleep(0.2)
        self.stop()
        return False

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:  # noqa: S310 - our own http URL
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
