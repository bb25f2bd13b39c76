"""Which webhook URLs are accepted, and where a webhook may connect.

A webhook URL is user-provided, so it could aim the portal at an internal service (SSRF).
The rules: only ``http``/``https`` URLs with a host are accepted (on the preferences page, in
the API and the CLI); and at send time the host's addresses must all be public, unless
``SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE=1`` (a site whose receivers are on its own network; the
tests, whose receiver is on loopback). Redirects are not followed. Known gap: the address is
checked before connecting, and resolved again by the HTTP client (DNS rebinding could slip
through between the two).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from runs.notify.errors import DeliveryError, PermanentDeliveryError


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook, or None if it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "webhook must be an http:// or https:// URL"
    if not parts.hostname:
        return "webhook URL has no host"
    if parts.username or parts.password:
        return "webhook URL must not contain a user name or password"
    return None


def redacted(url: str) -> str:
    """Scheme and host only: a webhook's path and query often hold its secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def check_destination(url: str) -> None:
    """Refuse a URL whose host resolves to a loopback, private, link-local or reserved address."""
    problem = url_problem(url)
    if problem:
        raise PermanentDeliveryError(problem)
    if settings.SCRIPTHUT_NOTIFY.allow_private_webhooks:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PermanentDeliveryError(
                f"{host} is a non-public address ({address}); set SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
