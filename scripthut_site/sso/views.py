"""The login page (local form plus a "Sign in with ..." button) and the OpenID Connect round trip."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET

from scripthut_site.sso.env import OIDCConfig
from scripthut_site.sso.oidc import FAILURES, client, fetch_claims

log = logging.getLogger(__name__)
NEXT_KEY = "scripthut_oidc_next"  # session key: where to go after the provider sends the user back


class LoginView(auth_views.LoginView):
    """Django's login form (local and LDAP accounts), plus the OpenID Connect button when configured."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc"] = settings.SCRIPTHUT_OIDC
        return context


def _config() -> OIDCConfig:
    config: OIDCConfig | None = settings.SCRIPTHUT_OIDC
    if config is None:
        raise Http404("OpenID Connect is not configured")
    return config


def _failed(request: HttpRequest, config: OIDCConfig, reason: object) -> HttpResponse:
    log.warning("sign-in with %s failed: %s", config.name, reason)
    messages.error(request, f"Sign-in with {config.name} failed. Try again, or log in with a username and password.")
    return redirect("login")


@login_not_required
@require_GET
def oidc_login(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider's sign-in page (remembering a safe ``next``)."""
    config = _config()
    request.session.pop(NEXT_KEY, None)
    next_url = request.GET.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        request.session[NEXT_KEY] = next_url
    try:
        return client(config).authorize_redirect(request, request.build_absolute_uri(reverse("oidc_callback")))
    except FAILURES as exc:
        return _failed(request, config, exc)


@login_not_required
@require_GET
def oidc_callback(request: HttpRequest) -> HttpResponse:
    """The provider sends the browser back here: check its answer, sign the user in."""
    config = _config()
    try:
        claims = fetch_claims(client(config), request)
    except FAILURES as exc:
        return _failed(request, config, exc)
    user = authenticate(request, oidc_claims=claims)
    if user is None:
        who = claims.get(config.username_claim)
        return _failed(request, config, f"no portal account for {config.username_claim}={who!r}")
    next_url = request.session.pop(NEXT_KEY, "")
    login(request, user)
    return redirect(next_url or settings.LOGIN_REDIRECT_URL)
