"""``GET /health``: liveness for load balancers and monitors.

Anonymous callers learn only ``{"status": "ok"}`` (200) or ``{"status": "error"}`` (503,
the database is unreachable): a backend's name and state are not for anyone on the network.
A signed-in user, or a caller with an API token (``Authorization: Token <key>``), also gets
``database`` and the status of each backend they may use (staff: every backend). An invalid
token is a 401 and counts as a failed sign-in (the lockout of ``runs.api.token_auth``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from runs.access import usable_backends

log = logging.getLogger("runs.web.health")


class InvalidToken(Exception):
    """The Authorization header is there but names no active user's token."""


def _viewer(request: HttpRequest) -> User | None:
    """Who asks: the session's user, the API token's, or None (anonymous)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, raw = header.strip().partition(" ")
        user = authenticate(request, api_token=raw.strip()) if scheme.lower() == "token" and raw.strip() else None
        if not isinstance(user, User):
            raise InvalidToken
        return user
    return request.user if isinstance(request.user, User) and request.user.is_authenticated else None


def _details(viewer: User) -> dict[str, Any]:
    return {
        "database": "ok",
        "backends": {
            name: status if enabled else "disabled"
            for name, status, enabled in usable_backends(viewer).values_list("name", "status", "enabled")
        },
    }


@login_not_required
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        viewer = _viewer(request)
        details = _details(viewer) if viewer is not None else {}
    except InvalidToken:
        return JsonResponse({"error": 'invalid API token; send "Authorization: Token <key>" or nothing'}, status=401)
    except DatabaseError:
        # The reason goes to the log only: it can name hosts and users.
        log.exception("health check: database unreachable")
        return JsonResponse({"status": "error"}, status=503)
    return JsonResponse({"status": "ok", **details})


# Mounted with include() so that urls.py needs a single line.
urlpatterns = [path("", health, name="health")]
