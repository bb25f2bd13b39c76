"""API tokens as a Django authentication backend, so that django-axes throttles them like passwords.

``authenticate(request, api_token=key)`` (called by the API's ``TokenAuth``) runs django-axes'
lockout check first and, on failure, sends ``user_login_failed``: repeated invalid tokens from
one address are refused for the cool-off time (429, see scripthut_site.lockout). Only a
SHA-256 of a key is stored; the row is found by that hash.

A revoked or expired token is refused too, and the request keeps why (:func:`refusal`: the
401 says so). The token a request came with is kept on it (:func:`token_scope`): a ``read``
token may not change anything (:func:`require_write`).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from runs.access import AccessDenied
from runs.models import ApiToken

# Writing last_used_at on every request would take SQLite's write lock for each GET;
# minute precision is plenty to tell live tokens from stale ones.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_TOKEN = "_scripthut_api_token"  # noqa: S105  (an attribute name)
_REFUSAL = "_scripthut_token_refusal"


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
        refused = token.refusal(now)
        if refused:
            setattr(request, _REFUSAL, refused)
            return None
        address = request.META.get("REMOTE_ADDR") or None if request is not None else None
        stale = token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL
        if stale or token.last_used_from != address:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_from=address)
        setattr(request, _TOKEN, token)
        return token.user

    def get_user(self, user_id: int) -> None:
        return None


def refusal(request: HttpRequest) -> str:
    """Why the request's token was refused when it was revoked or expired; else empty."""
    return str(getattr(request, _REFUSAL, ""))


def token_scope(request: HttpRequest) -> str:
    """The scope of the token a request came with (``read`` or ``write``)."""
    token = getattr(request, _TOKEN, None)
    return token.scope if token is not None else ApiToken.Scope.WRITE


def require_write(request: HttpRequest) -> None:
    """Refuse (403) a read-scoped token any operation that changes something: every method but
    GET, HEAD and OPTIONS, except dry runs (POSTs that store nothing)."""
    if request.method in SAFE_METHODS or request.path.endswith("/dry-run"):
        return
    if token_scope(request) == ApiToken.Scope.READ:
        raise AccessDenied("this API token is read-only: it may not change anything (make a write token)")
