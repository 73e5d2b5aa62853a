"""A local HTTP server that records requests and answers with a status per path — a
stand-in for tenant webhooks and for Kafka Connect's REST API (KIP-745)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpStub:
    statuses: dict[str, int] = field(default_factory=dict)  # path prefix -> status
    delays: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _match(self, table: dict[str, Any], path: str, default: Any) -> Any:
        for prefix, value in sorted(table.items(), key=lambda kv: -len(kv[0])):
            if path.startswith(prefix):
                return value
        return default

    def start(self) -> HttpStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                stub.received.append(Received(self.path, dict(self.headers.items()), body))
                delay = stub._match(stub.delays, self.path, 0.0)
                if delay:
                    time.sleep(delay)
                status = stub._match(stub.statuses, self.path, 200)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if status == 202 and "/restart" in self.path:  # KIP-745 answer
                    self.wfile.write(b'{"name":"x","connector":{"state":"RESTARTING"}}')

            def log_message(self, *_args: Any) -> None:  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def to(self, prefix: str) -> list[Received]:
        return [r for r in self.received if r.path.startswith(prefix)]
