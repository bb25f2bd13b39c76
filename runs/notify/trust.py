"""Which email addresses the portal mails a user's notifications to (README, *Notifications*).

The portal sends from its own address, so it must not mail whatever address a user types
in (it would relay their text to anyone). A user's notifications go only to an address the
portal trusts for that user:

- the account's address (``User.email``): set by staff in the admin, or at each sign-in by
  the directory (LDAP ``mail``) or the OpenID provider (``email`` claim); users cannot change it;
- an address they confirmed: the portal emailed a link to it (:func:`send_confirmation`) and
  they opened it while signed in (:func:`confirm`, a :class:`VerifiedEmail`);
- an address, or any address in a domain (or its subdomains), that staff allow:
  ``SCRIPTHUT_NOTIFY_EMAIL_DOMAINS``.

Any other address is refused where it is given (preferences page, API, CLI), naming it,
and skipped where notifications are written (:func:`first_trusted`: an address stored
before these rules, or in a domain staff no longer allow), for the next trusted one.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from runs.notify.models import Notification, VerifiedEmail
from scripthut_site.deployment import public_url

CONFIRM_SALT = "scripthut.notify.confirm-email"
CONFIRM_MAX_AGE = timedelta(days=2)
CONFIRMATIONS_PER_DAY = 5
CONFIRM_EVENT = "email.confirm"
HOW_TO_TRUST = (
    "use your account's address, confirm this one first (Notifications page: a link is emailed to it), "
    "or ask staff to allow its domain (SCRIPTHUT_NOTIFY_EMAIL_DOMAINS)"
)


class ConfirmError(ValueError):
    """A confirmation cannot be sent or accepted; the message says why."""


def _normal(address: str) -> str:
    return address.strip().lower()


def allowed_by_staff(address: str) -> bool:
    """Is ``address`` (or its domain) in ``SCRIPTHUT_NOTIFY_EMAIL_DOMAINS``?"""
    address = _normal(address)
    domain = address.rpartition("@")[2]
    for entry in settings.SCRIPTHUT_NOTIFY.email_domains:
        if "@" in entry:
            if address == entry:
                return True
        elif domain == entry or domain.endswith("." + entry):
            return True
    return False


def is_trusted(user: AbstractBaseUser, address: str) -> bool:
    address = _normal(address)
    if not address:
        return False
    if address == _normal(getattr(user, "email", "") or ""):
        return True
    return allowed_by_staff(address) or VerifiedEmail.objects.filter(user_id=user.pk, address=address).exists()


def untrusted_reason(user: AbstractBaseUser, address: str) -> str | None:
    """Why the portal will not mail ``user``'s notifications to ``address`` (None: it will)."""
    if not address or is_trusted(user, address):
        return None
    return f"{address} is not an address the portal trusts for you: {HOW_TO_TRUST}"


def first_trusted(user: AbstractBaseUser, *addresses: str) -> str:
    """The first of ``addresses`` the portal trusts for ``user`` ("" if none)."""
    return next((address for address in addresses if address and is_trusted(user, address)), "")


def confirm_link(user: AbstractBaseUser, address: str) -> str:
    token = signing.dumps({"user": user.pk, "address": _normal(address)}, salt=CONFIRM_SALT, compress=True)
    return public_url(os.environ) + reverse("confirm_email", args=[token])


def send_confirmation(user: AbstractBaseUser, address: str) -> None:
    """Email a confirmation link to ``address`` (through the outbox, like every notification)."""
    if is_trusted(user, address):
        raise ConfirmError(f"{address} is already an address the portal trusts for you")
    since = timezone.now() - timedelta(days=1)
    sent = Notification.objects.filter(user_id=user.pk, event=CONFIRM_EVENT, created_at__gte=since).count()
    if sent >= CONFIRMATIONS_PER_DAY:
        raise ConfirmError(f"you asked for {sent} confirmations in the last 24 hours; try again tomorrow")
    username = user.get_username()
    Notification.objects.create(
        user_id=user.pk,
        event=CONFIRM_EVENT,
        channel=Notification.Channel.EMAIL,
        target=_normal(address),
        subject="ScriptHut: confirm your email address",
        payload={
            "note": f"ScriptHut user {username} asked to receive notifications at this address. "
            f"Open this link while signed in as {username} to confirm it (valid for 2 days); "
            "if you did not ask for this, ignore this message.",
            "link": confirm_link(user, address),
        },
        dedupe_key=f"confirm:{user.pk}:{timezone.now().timestamp()}",
    )


def confirmed_address(user: AbstractBaseUser, token: str) -> str:
    """The address a confirmation link was sent to, if the link is genuine, fresh and ``user``'s."""
    try:
        data = signing.loads(token, salt=CONFIRM_SALT, max_age=CONFIRM_MAX_AGE)
    except signing.SignatureExpired:
        raise ConfirmError("this confirmation link has expired: ask for a new one") from None
    except signing.BadSignature:
        raise ConfirmError("this is not a confirmation link the portal sent") from None
    if data.get("user") != user.pk:
        raise ConfirmError("this confirmation link was sent for another account: sign in as that user to open it")
    return str(data["address"])


def confirm(user: AbstractBaseUser, token: str) -> str:
    """Record the link's address as verified for ``user``; returns the address."""
    address = confirmed_address(user, token)
    try:
        with transaction.atomic():
            VerifiedEmail.objects.get_or_create(user_id=user.pk, address=address)
    except IntegrityError:
        pass  # confirmed twice at once
    return address
