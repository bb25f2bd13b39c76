"""Notification settings from the environment (README "Notifications"); a pure function like deployment.py.

- ``SCRIPTHUT_SMTP_HOST``, ``SCRIPTHUT_SMTP_PORT``, ``SCRIPTHUT_SMTP_USER``, ``SCRIPTHUT_SMTP_PASSWORD``,
  ``SCRIPTHUT_SMTP_STARTTLS`` / ``SCRIPTHUT_SMTP_SSL`` (1 to use), ``SCRIPTHUT_EMAIL_FROM``: outgoing mail.
- ``SCRIPTHUT_NOTIFY_MAX_ATTEMPTS`` (8), ``SCRIPTHUT_NOTIFY_BACKOFF_SECONDS`` (30, doubled each retry, at
  most an hour), ``SCRIPTHUT_NOTIFY_CLAIM_SECONDS`` (300: a send claimed this long ago by a worker that
  died is tried again), ``SCRIPTHUT_NOTIFY_EVERY_SECONDS`` (5: how often Celery beat sends what is due).
- ``SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE`` (0): 1 lets webhooks reach loopback and private addresses; a
  comma-separated list of networks (``10.20.0.0/16,fd00:1::/64``) lets them reach those only.
- ``SCRIPTHUT_NOTIFY_EMAIL_DOMAINS`` (empty): comma-separated domains (each with its subdomains) and
  addresses that any user may have notifications mailed to, beside their own (``runs.notify.trust``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def notify_settings(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "EMAIL_BACKEND": env.get("SCRIPTHUT_EMAIL_BACKEND") or "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": env.get("SCRIPTHUT_SMTP_HOST") or "localhost",
        "EMAIL_PORT": int(env.get("SCRIPTHUT_SMTP_PORT") or 25),
        "EMAIL_HOST_USER": env.get("SCRIPTHUT_SMTP_USER", ""),
        "EMAIL_HOST_PASSWORD": env.get("SCRIPTHUT_SMTP_PASSWORD", ""),
        "EMAIL_USE_TLS": _flag(env, "SCRIPTHUT_SMTP_STARTTLS"),
        "EMAIL_USE_SSL": _flag(env, "SCRIPTHUT_SMTP_SSL"),
        "EMAIL_TIMEOUT": 30,
        "DEFAULT_FROM_EMAIL": env.get("SCRIPTHUT_EMAIL_FROM") or "scripthut@localhost",
    }


@dataclass(frozen=True)
class NotifyConfig:
    """How the outbox is sent (``settings.SCRIPTHUT_NOTIFY``)."""

    max_attempts: int = 8
    backoff_seconds: float = 30.0
    claim_seconds: float = 300.0
    allow_private_webhooks: bool = False
    webhook_networks: tuple[str, ...] = ()  # non-public networks webhooks may reach all the same
    email_domains: tuple[str, ...] = ()  # lower case; an entry with "@" is one address

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifyConfig:
        return cls(
            max_attempts=int(env.get("SCRIPTHUT_NOTIFY_MAX_ATTEMPTS") or 8),
            backoff_seconds=float(env.get("SCRIPTHUT_NOTIFY_BACKOFF_SECONDS") or 30),
            claim_seconds=float(env.get("SCRIPTHUT_NOTIFY_CLAIM_SECONDS") or 300),
            allow_private_webhooks=_flag(env, "SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE"),
            webhook_networks=_networks(env.get("SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE", "")),
            email_domains=tuple(
                entry.strip().lower().lstrip("*.@")
                for entry in env.get("SCRIPTHUT_NOTIFY_EMAIL_DOMAINS", "").split(",")
                if entry.strip()
            ),
        )


def _networks(value: str) -> tuple[str, ...]:
    """The networks of ``SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE`` when it is a list (not 0/1)."""
    if value.strip().lower() in ("", "0", "1", "true", "yes", "false", "no"):
        return ()
    networks = []
    for item in (part.strip() for part in value.split(",")):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(
                f"SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE: {item!r} is not a network (give 0, 1 or e.g. 10.20.0.0/16,fd00::/8)"
            ) from None
    return tuple(networks)


def beat_entry(env: Mapping[str, str]) -> dict[str, Any]:
    """The Celery beat entry that sends due notifications."""
    every = float(env.get("SCRIPTHUT_NOTIFY_EVERY_SECONDS") or 5)
    return {"scripthut-notify": {"task": "runs.notify.celery_tasks.deliver_notifications", "schedule": every}}
