"""Real receivers for notification tests: an HTTP webhook server and an SMTP server, on loopback.

``WebhookReceiver`` (http.server in a thread of the test process) keeps every request and,
like a careful real receiver, de-duplicates by the ``Idempotency-Key`` header: ``deliveries``
are the logical deliveries (one per key), ``requests`` every POST it got. It can answer 500 to
the first N requests, or hold the first request (after recording it) until released.

``smtp_server`` runs aiosmtpd in a subprocess that writes each message into a Maildir.
"""

from __future__ import annotations

import json
import mailbox
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.services import ChildProcess, accepts_connections, free_port, serve


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    stall_first: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    stalled: threading.Event = field(default_factory=threading.Event)  # set once the first request is held
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: dict[str, Any]) -> int:
        key = headers.get("Idempotency-Key", "")
        with self.lock:
            self.requests.append({"headers": headers, "body": body})
            number = len(self.requests)
            if number <= self.fail_first:
                return 500
            self.deliveries.setdefault(key, body)  # a repeated key is acknowledged, not delivered again
        if self.stall_first and number == 1:
            self.stalled.set()
            self.release.wait(120)
        return 200


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status = receiver.handle(dict(self.headers.items()), body)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender was killed while we held its request

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def webhook_server(receiver: WebhookReceiver) -> Iterator[str]:
    """Serve ``receiver`` on a free loopback port; yields its URL (with a secret-looking token)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/sekrit-token"
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class SmtpServer:
    port: int
    maildir: Path

    def messages(self) -> list[Message]:
        return list(mailbox.Maildir(self.maildir, create=False))


def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    def start() -> tuple[ChildProcess, SmtpServer]:
        port = free_port()
        maildir = tmp_path / "maildir"
        cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
        cmd += ["-c", "aiosmtpd.handlers.Mailbox", str(maildir)]
        child = ChildProcess.start("aiosmtpd", cmd, tmp_path / "smtp.log")
        child.wait_until(lambda: accepts_connections(port) and maildir.exists())
        return child, SmtpServer(port, maildir)

    yield from serve("SMTP server (aiosmtpd)", start)
