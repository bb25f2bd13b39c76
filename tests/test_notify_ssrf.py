"""Issue 18, finding 7: a webhook cannot reach the portal's own loopback, by any spelling.

The check judges the IPv4 address that an IPv6 one carries, and the request connects to
the address that was checked. DNS cannot be faked on this machine without changing its
resolver for everyone, so the tests that need a host name answering differently from
one lookup to the next replace ``socket.getaddrinfo`` for that one name (the only seam
here); the receivers and the connections are real.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runs.models import Notification
from runs.notify.deliver import deliver_due
from runs.notify.errors import PermanentDeliveryError
from runs.notify.webhook_url import check_destination
from tests.notify_receivers import WebhookReceiver, _handler
from tests.test_notify_delivery import _send_to, notify_config

pytestmark = pytest.mark.django_db
REAL_GETADDRINFO = socket.getaddrinfo


@contextmanager
def receiver_at(
    address: str, port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[WebhookReceiver, int]]:
    """A real webhook receiver listening on ``address`` (optionally over TLS); yields it and its port."""
    receiver = WebhookReceiver()
    server = ThreadingHTTPServer((address, port), _handler(receiver))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def fake_dns(monkeypatch: pytest.MonkeyPatch, name: str, answers: list[str]) -> list[str]:
    """``name`` resolves to ``answers[0]``, then ``answers[1]``, ... (the last one again after that);
    every other name as usual. Returns the list of answers given, one per lookup."""
    given: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        answer = answers[min(len(given), len(answers) - 1)]
        given.append(answer)
        return REAL_GETADDRINFO(answer, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return given


@pytest.mark.parametrize(
    "host",
    [
        "[::127.0.0.1]",  # IPv4-compatible
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[64:ff9b::7f00:1]",  # NAT64 (well-known prefix)
        "[64:ff9b:1::7f00:1]",  # NAT64 (local-use prefix)
        "[2002:7f00:1::]",  # 6to4
        "[2002:a00:1::]",  # 6to4 of 10.0.0.1
        "localhost",  # a name that resolves to loopback
        "127.1",
    ],
)
def test_loopback_in_every_spelling_is_refused(host: str) -> None:
    with notify_config(allow_private_webhooks=False), pytest.raises(PermanentDeliveryError) as caught:
        check_destination(f"http://{host}:8000/hooks/token")
    assert "non-public address" in str(caught.value)
    if host.startswith("[") and "ffff" not in host:
        assert "which carries 127.0.0.1" in str(caught.value) or "which carries 10.0.0.1" in str(caught.value)


def test_public_addresses_pass_the_check() -> None:
    with notify_config(allow_private_webhooks=False):
        for host in ("[2606:4700::1111]", "[2002:808:808::]", "[64:ff9b::808:808]", "8.8.8.8"):
            check_destination(f"https://{host}/hook")  # resolves a literal only: nothing leaves the machine


def test_a_host_that_rebinds_after_the_check_is_still_reached_at_the_checked_address(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The site allows one private address (127.0.0.1) and no other. The name answers that
    # address to the first lookup and 127.0.0.2 (the "internal service") afterwards.
    with receiver_at("127.0.0.1") as (checked, port), receiver_at("127.0.0.2", port) as (internal, _):
        given = fake_dns(monkeypatch, "hooks.rebind.test", ["127.0.0.1", "127.0.0.2"])
        _send_to(user, webhook=f"http://hooks.rebind.test:{port}/hooks/T0/sekrit-token")
        with notify_config(allow_private_webhooks=False, webhook_networks=("127.0.0.1/32",)):
            assert deliver_due() == 1
    assert given == ["127.0.0.1"]  # one lookup: the connection used its answer
    (request,) = checked.requests
    assert request["headers"]["Host"] == f"hooks.rebind.test:{port}" and not internal.requests
    assert Notification.objects.get().state == "sent"


def test_an_answer_outside_the_allowed_networks_is_refused(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with receiver_at("127.0.0.2") as (internal, port):
        fake_dns(monkeypatch, "hooks.rebind.test", ["127.0.0.2"])
        _send_to(user, webhook=f"http://hooks.rebind.test:{port}/hook")
        with notify_config(allow_private_webhooks=False, webhook_networks=("127.0.0.1/32",)):
            deliver_due()
    note = Notification.objects.get()
    assert note.state == "failed" and "non-public address (127.0.0.2)" in note.last_error and not internal.requests


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A TLS context serving a certificate for ``name``, and the certificate (the CA bundle to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_https_to_the_pinned_address_checks_the_certificate_of_the_host_name(
    user: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    context, ca = self_signed(tmp_path, "hooks.pinned.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    names: list[str] = []

    def sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name or "")

    context.sni_callback = sni
    with receiver_at("127.0.0.1", tls=context) as (receiver, port):
        fake_dns(monkeypatch, "hooks.pinned.test", ["127.0.0.1"])
        _send_to(user, webhook=f"https://hooks.pinned.test:{port}/hooks/T0/sekrit-token")
        assert deliver_due() == 1
        # A name the certificate does not cover, pinned to the same server: the check still fails it.
        fake_dns(monkeypatch, "other.pinned.test", ["127.0.0.1"])
        _send_to(user, webhook=f"https://other.pinned.test:{port}/hook", key="other")
        assert deliver_due() == 0
    assert names[0] == "hooks.pinned.test"  # SNI names the host, not the address
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.pinned.test:{port}"
    other = Notification.objects.get(dedupe_key="other")
    assert other.state == "pending" and "SSLError" in other.last_error
