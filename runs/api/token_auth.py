"""API tokens as a Django authentication backend, so that django-axes throttles them like passwords.

``authenticate(request, api_token=key)`` (called by the API's ``TokenAuth``) runs django-axes'
lockout check first and, on failure, sends ``user_login_failed``: repeated invalid tokens from
one address are refused for the cool-off time (429, see scripthut_site.lockout). Only a
SHA-256 of a key is stored; the row is found by that hash.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from runs.models import ApiToken

# Writing last_used_at on every request would take SQLite's write lock for each GET;
# minute precision is plenty to tell live tokens from stale ones.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


class ApiTokenBackend(BaseBackend):
    """The active user whose token is ``api_token``. Never a session's backend (no ``login()``)."""

    # No **kwargs: Django skips this backend for username/password logins.
    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, api_token: str | None = None
    ) -> User | None:
        if not api_token:
            return None
        token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(api_token)).first()
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user

    def get_user(self, user_id: int) -> None:
        return None


def token_scope(request: HttpRequest) -> str:
    """The scope of the token a request came with (``read`` or ``write``)."""
    return "write"
