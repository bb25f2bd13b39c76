"""Deployment settings from the environment: which host names the portal answers to, TLS, throttling.

Pure functions of an environment mapping (like scripthut_site.sso.env), so that settings.py
and the tests build the same settings. README "Deployment hardening".

- ``SCRIPTHUT_PUBLIC_URL`` (e.g. ``https://portal.example.org``): the address people use. Its
  host is allowed and its origin trusted for CSRF; an ``https`` URL also means "behind a TLS
  proxy": the proxy's ``X-Forwarded-Proto`` is trusted, cookies are secure-only and HSTS is on.
- ``ALLOWED_HOSTS``: overrides the derived list (comma-separated; ``*`` allows any).
- ``SCRIPTHUT_LOGIN_FAILURE_LIMIT``, ``SCRIPTHUT_LOGIN_COOLOFF_MINUTES``: login throttling.
- ``SCRIPTHUT_TRUSTED_PROXIES``: the only peers whose ``X-Forwarded-For``/``-Proto`` the server
  believes (empty: none). Everything that reads a client's address (the lockout, the audit
  trail) reads :func:`client_address`: the real peer, or what a trusted proxy forwarded.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

log = logging.getLogger(__name__)

LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")  # noqa: S104 (names of "every interface", not a bind)
HSTS_SECONDS = 365 * 24 * 3600
LOGIN_FAILURE_LIMIT = 5
LOGIN_COOLOFF_MINUTES = 15.0


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def public_url(env: Mapping[str, str]) -> str:
    url = env.get("SCRIPTHUT_PUBLIC_URL", "").strip().rstrip("/")
    if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
        raise ImproperlyConfigured(
            f"SCRIPTHUT_PUBLIC_URL must be an http(s) URL such as https://portal.example.org, not {url!r}"
        )
    return url


def host_names(address: str) -> list[str]:
    """The Host header values that reach a server bound to ``address``."""
    address = address.strip()
    if address in WILDCARD_ADDRESSES:
        return [socket.gethostname()]  # plus the local names; others via SCRIPTHUT_PUBLIC_URL
    if ":" in address and not address.startswith("["):
        return [f"[{address}]"]  # an IPv6 address, as it appears in a Host header
    return [address]


def allowed_hosts(env: Mapping[str, str], server_host: str | None = None) -> list[str]:
    """``ALLOWED_HOSTS`` if set; else the local names, the configured server host and the public URL's host."""
    if env.get("ALLOWED_HOSTS", "").strip():
        return _list(env["ALLOWED_HOSTS"])
    hosts = list(LOCAL_HOSTS)
    if server_host:
        hosts += host_names(server_host)
    url = public_url(env)
    if url:
        hosts.append(str(urlsplit(url).hostname))
    return list(dict.fromkeys(hosts))


def allow_host(address: str) -> None:
    """``scripthut serve`` listens on ``address`` (its --host, or the configured one): answer to it too.

    Nothing changes when ``ALLOWED_HOSTS`` is set: that list is the whole answer.
    """
    if not os.environ.get("ALLOWED_HOSTS", "").strip():
        settings.ALLOWED_HOSTS = list(dict.fromkeys([*settings.ALLOWED_HOSTS, *host_names(address)]))
    log.info(
        "answering requests for %s (others: set SCRIPTHUT_PUBLIC_URL or ALLOWED_HOSTS)",
        ", ".join(settings.ALLOWED_HOSTS),
    )


def csrf_trusted_origins(env: Mapping[str, str]) -> list[str]:
    """``CSRF_TRUSTED_ORIGINS`` and the public URL's origin (a proxy may forward another Host)."""
    origins = _list(env.get("CSRF_TRUSTED_ORIGINS", ""))
    url = public_url(env)
    if url:
        parts = urlsplit(url)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return list(dict.fromkeys(origins))


def tls_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Behind a TLS-terminating proxy (an ``https`` public URL): trust its scheme header, secure cookies, HSTS."""
    if urlsplit(public_url(env)).scheme != "https":
        return {}
    return {
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": int(env.get("SCRIPTHUT_HSTS_SECONDS") or HSTS_SECONDS),
    }


def trusted_proxies(env: Mapping[str, str]) -> list[str]:
    """``SCRIPTHUT_TRUSTED_PROXIES``: addresses or networks (``10.0.0.5``, ``10.1.0.0/16``), comma-separated."""
    proxies = _list(env.get("SCRIPTHUT_TRUSTED_PROXIES", ""))
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"SCRIPTHUT_TRUSTED_PROXIES: {proxy!r} is not an IP address or network (e.g. 10.0.0.5, 10.1.0.0/16)"
            ) from None
    return proxies


def server_proxy_options() -> dict[str, Any]:
    """uvicorn's options for forwarded headers (``scripthut serve``): believed only from the
    trusted proxies; uvicorn's own default (``FORWARDED_ALLOW_IPS``, else 127.0.0.1) is never used,
    so a process on the portal's machine cannot pose as any address."""
    proxies = list(settings.SCRIPTHUT_TRUSTED_PROXIES)
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": proxies}


def client_address(request: HttpRequest) -> str | None:
    """The client's address: the server puts the real peer's in REMOTE_ADDR, or the forwarded
    one when the peer is a trusted proxy (:func:`server_proxy_options`). django-axes
    (``AXES_CLIENT_IP_CALLABLE``) and the audit trail read it here, never a header."""
    return request.META.get("REMOTE_ADDR") or None


def throttle_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """django-axes: N failures per username and per address in the cool-off time lock them for that time."""
    return {
        "AXES_FAILURE_LIMIT": int(env.get("SCRIPTHUT_LOGIN_FAILURE_LIMIT") or LOGIN_FAILURE_LIMIT),
        "AXES_COOLOFF_TIME": timedelta(
            minutes=float(env.get("SCRIPTHUT_LOGIN_COOLOFF_MINUTES") or LOGIN_COOLOFF_MINUTES)
        ),
        "AXES_LOCKOUT_PARAMETERS": "scripthut_site.lockout.lockout_parameters",
        "AXES_LOCKOUT_CALLABLE": "scripthut_site.lockout.lockout_response",
        "AXES_CLIENT_IP_CALLABLE": "scripthut_site.deployment.client_address",
        # Refused attempts during a lockout do not extend it: the Retry-After given stays true.
        "AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT": False,
        # The log names the username and address (as the audit trail does); passwords are always masked.
        "AXES_SENSITIVE_PARAMETERS": ["csrfmiddlewaretoken"],
    }
