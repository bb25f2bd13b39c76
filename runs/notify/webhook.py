"""Webhook delivery: a JSON POST with the idempotency key in the ``Idempotency-Key`` header and the body.

Slack-style incoming webhooks (hooks.slack.com, or flagged by the user) get ``{"text": ...}``,
which Slack, Mattermost, Rocket.Chat and Teams' Slack-compatible hooks all accept.

The request connects to the address that ``webhook_url.destination`` resolved and checked,
not to what a second lookup would say: the URL is rewritten to that address, and the
original host goes in the Host header and, for https, in SNI and the certificate check
(:class:`PinnedAdapter`). Proxy variables are not used (a proxy would resolve the host
again); ``REQUESTS_CA_BUNDLE`` still names the CA bundle, if set.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from runs.notify.errors import DeliveryError
from runs.notify.models import Notification
from runs.notify.webhook_url import Destination, destination, redacted

TIMEOUT_SECONDS = 10


class PinnedAdapter(HTTPAdapter):
    """An adapter whose TLS connections name ``host`` (SNI, certificate check), whatever address the URL has."""

    def __init__(self, host: str):
        self.host = host
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.host
            pool_kwargs["assert_hostname"] = self.host
        return host_params, pool_kwargs


def pinned_url(url: str, to: Destination) -> str:
    """``url`` with its host replaced by the checked address."""
    literal = f"[{to.address}]" if isinstance(to.address, ipaddress.IPv6Address) else str(to.address)
    return urlunsplit(urlsplit(url)._replace(netloc=f"{literal}:{to.port}"))


def post_pinned(url: str, to: Destination, json: dict[str, Any], headers: dict[str, str]) -> requests.Response:
    """POST to the checked address, as to ``url``'s host (Host header, SNI, certificate)."""
    netloc = urlsplit(url).netloc  # no user:password@ (url_problem refuses them)
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", PinnedAdapter(to.host))
        session.mount("https://", PinnedAdapter(to.host))
        return session.post(
            pinned_url(url, to),
            json=json,
            headers=headers | {"Host": netloc},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
            verify=os.environ.get("REQUESTS_CA_BUNDLE") or True,
        )


def body(note: Notification) -> dict[str, Any]:
    if note.slack:
        return {"text": slack_text(note)}
    return {"idempotency_key": note.idempotency_key, "event": note.event, "subject": note.subject, **note.payload}


def slack_text(note: Notification) -> str:
    payload = note.payload
    lines = [note.subject]
    counts = {state: n for state, n in (payload.get("counts") or {}).items() if n}  # every state is counted
    if counts:
        lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    if payload.get("cost") is not None:
        lines.append(f"cost: ${payload['cost']:.2f}")
    if payload.get("link"):
        lines.append(f"<{payload['link']}|Open the run>")
    return "\n".join(lines)


def send_webhook(note: Notification) -> None:
    url = note.target
    to = destination(url)
    headers = {
        "Idempotency-Key": note.idempotency_key,
        "X-ScriptHut-Event": note.event,
        "User-Agent": "ScriptHut-Notify/1",
    }
    try:
        response = post_pinned(url, to, body(note), headers)
    except requests.Timeout:
        raise DeliveryError(f"{redacted(url)}: no answer in {TIMEOUT_SECONDS}s") from None
    except requests.RequestException as exc:
        # The exception's text holds the full URL (and so its token): name only its kind.
        raise DeliveryError(f"{redacted(url)}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"{redacted(url)} answered HTTP {response.status_code}")
