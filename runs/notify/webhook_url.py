"""Which webhook URLs are accepted, and where a webhook may connect.

A webhook URL is user-provided, so it could aim the portal at an internal service (SSRF).
The rules: only ``http``/``https`` URLs with a host are accepted (on the preferences page, in
the API and the CLI); and at send time the host is resolved ONCE (:func:`destination`),
every address it resolves to must be public, and the request connects to the address that
was checked (``runs.notify.webhook`` pins it, keeping the URL's host for the Host header, SNI
and the certificate check), so DNS rebinding cannot move it elsewhere. An IPv6 address that
carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64
``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo) is judged by that IPv4
address too. ``SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE=1`` allows every address (the tests, whose
receivers are on loopback); a list of networks allows those only (a site whose receivers are
on its own network). Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from runs.notify.errors import DeliveryError, PermanentDeliveryError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
DEFAULT_PORTS = {"http": 80, "https": 443}


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook, or None if it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "webhook must be an http:// or https:// URL"
    if not parts.hostname:
        return "webhook URL has no host"
    if parts.username or parts.password:
        return "webhook URL must not contain a user name or password"
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return "webhook URL has an invalid host name"
    try:
        parts.port  # noqa: B018 (reading it validates it)
    except ValueError:
        return "webhook URL has an invalid port"
    return None


def redacted(url: str) -> str:
    """Scheme and host only: a webhook's path and query often hold its secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in NAT64):
        return low32
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (deprecated "IPv4-compatible"); not :: or ::1
        return low32
    return None


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to ``address`` (None: it may)."""
    config = settings.SCRIPTHUT_NOTIFY
    if config.allow_private_webhooks:
        return None
    inner = embedded_ipv4(address)
    if _public(address) and (inner is None or _public(inner)):
        return None
    if any(address in ipaddress.ip_network(network) for network in config.webhook_networks):
        return None
    shown = f"{address}, which carries {inner}" if inner is not None else str(address)
    return f"a non-public address ({shown}); SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE allows private addresses"


@dataclass(frozen=True)
class Destination:
    """Where a webhook's request goes: the URL's host and port, and the one address checked."""

    host: str
    port: int
    address: IPAddress


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (one lookup)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])  # without an IPv6 zone
        if address not in found:
            found.append(address)
    return found


def destination(url: str) -> Destination:
    """Resolve the URL's host once and check every address; the request must go to ``address``."""
    problem = url_problem(url)
    if problem:
        raise PermanentDeliveryError(problem)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise DeliveryError(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from None
    if not addresses:
        raise DeliveryError(f"cannot resolve {host}: no address")
    for address in addresses:
        why = refusal(address)
        if why:
            raise PermanentDeliveryError(f"{host} is {why}")
    return Destination(host, port, addresses[0])


def check_destination(url: str) -> None:
    """Refuse a URL whose host resolves to a loopback, private, link-local or reserved address."""
    destination(url)
