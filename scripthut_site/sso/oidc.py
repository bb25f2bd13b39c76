"""OpenID Connect with Authlib: the provider's client, its claims, and the users they make.

Authlib does the protocol: discovery from ``<issuer>/.well-known/openid-configuration``
(fetched on first use and kept), the code flow with state, nonce and PKCE, and the ID token's
signature, issuer, audience and expiry. This module only turns the claims into a portal user:
the username claim names the user, the groups claim replaces the user's Django groups on every
login, and the optional staff group sets ``is_staff``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.http import HttpRequest
from joserfc.errors import JoseError

from scripthut_site.sso.env import OIDCConfig

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10  # seconds for each request to the provider
NAME_MAX = 150  # Django's username, name and group name columns


class SignInError(Exception):
    """The provider's answer cannot sign anyone in; the message says why (no secrets in it)."""


# What a sign-in can fail with: the provider's answer, an unreachable provider, a bad token.
FAILURES = (AuthlibBaseError, JoseError, requests.RequestException, SignInError)


@functools.lru_cache(maxsize=4)
def client(config: OIDCConfig) -> DjangoOAuth2App:
    """Authlib's client for ``config`` (kept, with the provider's discovery document once read)."""
    app: DjangoOAuth2App = OAuth().register(
        "scripthut",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=config.metadata_url,
        client_kwargs={"scope": config.scopes, "code_challenge_method": "S256", "default_timeout": HTTP_TIMEOUT},
    )
    return app


def fetch_claims(app: DjangoOAuth2App, request: HttpRequest) -> dict[str, Any]:
    """Finish the code flow of ``request`` (the provider's redirect back) and return the user's claims.

    The ID token's claims, completed by the userinfo endpoint's (providers often send groups
    only there); both must be about the same subject.
    """
    token = app.authorize_access_token(request)
    claims = dict(token.get("userinfo") or {})
    if not claims.get("sub"):
        raise SignInError("the provider sent no ID token")
    if app.load_server_metadata().get("userinfo_endpoint"):
        userinfo = app.userinfo(token=token)
        if userinfo.get("sub") != claims["sub"]:
            raise SignInError("the userinfo endpoint answered for another subject")
        claims.update(userinfo)
    return claims


def group_names(claims: Mapping[str, Any], config: OIDCConfig) -> list[str]:
    value = claims.get(config.groups_claim) or []
    if isinstance(value, str):
        value = [value]
    return sorted({str(name)[:NAME_MAX] for name in value if str(name)})


class OIDCBackend(BaseBackend):
    """Signs in the user that an OpenID Connect provider vouched for (``oidc_claims``).

    The user is matched by username and created on first sign-in without a usable password.
    An existing account that has a local password is refused, so a provider can never take over
    a local account (such as ``admin``) that happens to share a name.
    """

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, oidc_claims: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> User | None:
        config: OIDCConfig | None = settings.SCRIPTHUT_OIDC
        if oidc_claims is None or config is None:
            return None
        username = str(oidc_claims.get(config.username_claim) or "")[:NAME_MAX]
        if not username:
            log.warning("OpenID Connect sign-in refused: no %r claim", config.username_claim)
            return None
        user, created = User.objects.get_or_create(username=username, defaults={"password": make_password(None)})
        if not created and user.has_usable_password():
            log.warning("OpenID Connect sign-in refused: %s is a local account with a password", username)
            return None
        update_user(user, oidc_claims, config)
        return user if user.is_active else None

    def get_user(self, user_id: int) -> User | None:
        return ModelBackend().get_user(user_id)


@transaction.atomic
def update_user(user: User, claims: Mapping[str, Any], config: OIDCConfig) -> None:
    """Names and e-mail from the claims; groups replaced by the groups claim; staff from the staff group."""
    names = group_names(claims, config)
    user.email = str(claims.get("email") or user.email)
    user.first_name = str(claims.get("given_name") or user.first_name)[:NAME_MAX]
    user.last_name = str(claims.get("family_name") or user.last_name)[:NAME_MAX]
    if config.staff_group:
        user.is_staff = config.staff_group in names
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in names])
