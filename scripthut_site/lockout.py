"""Login throttling with django-axes: who is counted, and what a locked-out client is told.

django-axes does the work: its backend (first in ``AUTHENTICATION_BACKENDS``) refuses a
locked-out user or address before any other backend runs, its signal handler counts the
failures, and its middleware answers a refused request with :func:`lockout_response`.
Failures are counted per address always and per username too when the attempt names one
(a password login does; an API token or an OpenID Connect sign-in does not). The limits are
``SCRIPTHUT_LOGIN_FAILURE_LIMIT`` failures in ``SCRIPTHUT_LOGIN_COOLOFF_MINUTES`` (settings).
"""

from __future__ import annotations

import math
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from scripthut_site.sso.views import LoginView

HTTP_TOO_MANY_REQUESTS = 429


def lockout_parameters(request: Any, credentials: dict[str, Any] | None) -> list[str]:
    """axes' ``AXES_LOCKOUT_PARAMETERS``: by address, and by username when there is one.

    Without a username, counting by username would put every token failure of every
    address under one shared "no username" key.
    """
    if isinstance(request, HttpRequest):
        username = get_client_username(request, credentials)
    else:  # an AccessAttempt
        username = getattr(request, "username", None)
    return ["username", "ip_address"] if username else ["ip_address"]


def retry_after(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Seconds until the newest counted failure leaves the cool-off window (then the lock is gone)."""
    cool_off = get_cool_off(request)
    assert cool_off is not None, "settings.AXES_COOLOFF_TIME is always set"
    attempts = AxesDatabaseHandler().get_user_attempts(request, credentials)
    newest = [latest for qs in attempts if (latest := qs.aggregate(latest=Max("attempt_time"))["latest"])]
    if not newest:
        return math.ceil(cool_off.total_seconds())
    return max(1, math.ceil((max(newest) + cool_off - timezone.now()).total_seconds()))


def message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"Too many failed sign-ins for this account or from this address. Try again in {wait}."


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """axes' ``AXES_LOCKOUT_CALLABLE``: 429 with Retry-After; JSON for the API, else the login page."""
    seconds = retry_after(request, credentials)
    text = message(seconds)
    match = getattr(request, "resolver_match", None)
    if match is not None and "api" in match.namespaces:
        response: HttpResponse = JsonResponse({"error": text}, status=HTTP_TOO_MANY_REQUESTS)
    else:
        response = _login_page(request, text)
    response["Retry-After"] = str(seconds)
    return response


def _login_page(request: HttpRequest, text: str) -> HttpResponse:
    """The login page with the lockout message instead of the form's error (also for the admin's login)."""
    view = LoginView(extra_context={"locked_out": text})
    view.setup(request)
    form = view.get_form_class()(request)
    response = view.render_to_response(view.get_context_data(form=form))
    assert isinstance(response, TemplateResponse)
    response.status_code = HTTP_TOO_MANY_REQUESTS
    return response.render()  # nothing renders a response made in a middleware otherwise
