"""The single sign-on settings, read from the environment (README "Single sign-on").

Pure functions of an environment mapping, so that settings.py and the tests build the same
settings. Nothing set means local accounts only, as without this module.

- ``SCRIPTHUT_LDAP_URL`` turns on django-auth-ldap: users are found with
  ``SCRIPTHUT_LDAP_USER_SEARCH`` (base DN) + ``SCRIPTHUT_LDAP_USER_FILTER``, or bound to
  directly with ``SCRIPTHUT_LDAP_USER_DN_TEMPLATE``; their groups under
  ``SCRIPTHUT_LDAP_GROUP_SEARCH`` (posixGroup or groupOfNames) become Django groups.
- ``SCRIPTHUT_OIDC_ISSUER`` turns on OpenID Connect (scripthut_site.sso.oidc).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ldap
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, PosixGroupType

AXES_BACKEND = "axes.backends.AxesStandaloneBackend"  # refuses locked-out users and addresses (lockout.py)
TOKEN_BACKEND = "runs.api.token_auth.ApiTokenBackend"  # noqa: S105 (a class path) API tokens, throttled like passwords
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
LDAP_BACKEND = "django_auth_ldap.backend.LDAPBackend"
OIDC_BACKEND = "scripthut_site.sso.oidc.OIDCBackend"

LDAP_USER_ATTRS = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
LDAP_GROUP_TYPES = ("posixGroup", "groupOfNames")
LDAP_NETWORK_TIMEOUT = 5  # seconds to connect; an unreachable server fails the login, it does not hang it
LDAP_TIMEOUT = 10  # seconds for one LDAP operation


@dataclass(frozen=True)
class OIDCConfig:
    """One OpenID Connect provider. The client secret stays out of ``repr`` (and so out of logs)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    name: str = "SSO"
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    scopes: str = "openid email profile"
    staff_group: str = ""

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def oidc_config(env: Mapping[str, str]) -> OIDCConfig | None:
    issuer = env.get("SCRIPTHUT_OIDC_ISSUER", "")
    if not issuer:
        return None
    client_id = env.get("SCRIPTHUT_OIDC_CLIENT_ID", "")
    client_secret = env.get("SCRIPTHUT_OIDC_CLIENT_SECRET", "")
    if not (client_id and client_secret):
        raise ImproperlyConfigured(
            "SCRIPTHUT_OIDC_ISSUER needs SCRIPTHUT_OIDC_CLIENT_ID and SCRIPTHUT_OIDC_CLIENT_SECRET"
        )
    return OIDCConfig(
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        name=env.get("SCRIPTHUT_OIDC_NAME") or OIDCConfig.name,
        groups_claim=env.get("SCRIPTHUT_OIDC_GROUPS_CLAIM") or OIDCConfig.groups_claim,
        username_claim=env.get("SCRIPTHUT_OIDC_USERNAME_CLAIM") or OIDCConfig.username_claim,
        scopes=env.get("SCRIPTHUT_OIDC_SCOPES") or OIDCConfig.scopes,
        staff_group=env.get("SCRIPTHUT_OIDC_STAFF_GROUP", ""),
    )


def ldap_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``AUTH_LDAP_*`` settings of django-auth-ldap; empty when ``SCRIPTHUT_LDAP_URL`` is unset."""
    url = env.get("SCRIPTHUT_LDAP_URL", "")
    if not url:
        return {}
    return {
        "AUTH_LDAP_SERVER_URI": url,
        "AUTH_LDAP_BIND_DN": env.get("SCRIPTHUT_LDAP_BIND_DN", ""),
        "AUTH_LDAP_BIND_PASSWORD": env.get("SCRIPTHUT_LDAP_BIND_PASSWORD", ""),
        "AUTH_LDAP_USER_ATTR_MAP": LDAP_USER_ATTRS,
        "AUTH_LDAP_CONNECTION_OPTIONS": {
            ldap.OPT_NETWORK_TIMEOUT: LDAP_NETWORK_TIMEOUT,
            ldap.OPT_TIMEOUT: LDAP_TIMEOUT,
        },
        **_ldap_user_lookup(env),
        **_ldap_groups(env),
    }


def _ldap_user_lookup(env: Mapping[str, str]) -> dict[str, Any]:
    template = env.get("SCRIPTHUT_LDAP_USER_DN_TEMPLATE", "")
    base = env.get("SCRIPTHUT_LDAP_USER_SEARCH", "")
    if template:
        return {"AUTH_LDAP_USER_DN_TEMPLATE": template}
    if not base:
        raise ImproperlyConfigured(
            "SCRIPTHUT_LDAP_URL needs SCRIPTHUT_LDAP_USER_SEARCH (a base DN) or SCRIPTHUT_LDAP_USER_DN_TEMPLATE"
        )
    user_filter = env.get("SCRIPTHUT_LDAP_USER_FILTER") or "(uid=%(user)s)"
    return {"AUTH_LDAP_USER_SEARCH": LDAPSearch(base, ldap.SCOPE_SUBTREE, user_filter)}


def _ldap_groups(env: Mapping[str, str]) -> dict[str, Any]:
    """Group search, type and mirroring: each login replaces the user's Django groups by the directory's."""
    base = env.get("SCRIPTHUT_LDAP_GROUP_SEARCH", "")
    staff_group = env.get("SCRIPTHUT_LDAP_STAFF_GROUP", "")
    if not base:
        if staff_group:
            raise ImproperlyConfigured("SCRIPTHUT_LDAP_STAFF_GROUP needs SCRIPTHUT_LDAP_GROUP_SEARCH")
        return {}
    kind = env.get("SCRIPTHUT_LDAP_GROUP_TYPE") or LDAP_GROUP_TYPES[0]
    if kind not in LDAP_GROUP_TYPES:
        choices = " or ".join(LDAP_GROUP_TYPES)
        raise ImproperlyConfigured(f"SCRIPTHUT_LDAP_GROUP_TYPE must be {choices}, not {kind!r}")
    group_type = PosixGroupType() if kind == "posixGroup" else GroupOfNamesType()
    values: dict[str, Any] = {
        "AUTH_LDAP_GROUP_SEARCH": LDAPSearch(base, ldap.SCOPE_SUBTREE, f"(objectClass={kind})"),
        "AUTH_LDAP_GROUP_TYPE": group_type,
        "AUTH_LDAP_MIRROR_GROUPS": True,
    }
    if staff_group:
        values["AUTH_LDAP_USER_FLAGS_BY_GROUP"] = {"is_staff": staff_group}
    return values


def authentication_backends(env: Mapping[str, str]) -> list[str]:
    """The lockout check first (it must be), local accounts (no network for them), the directory,
    OpenID Connect, and API tokens last (only ``authenticate(api_token=...)`` reaches that one)."""
    backends = [AXES_BACKEND, MODEL_BACKEND]
    if env.get("SCRIPTHUT_LDAP_URL"):
        backends.append(LDAP_BACKEND)
    if env.get("SCRIPTHUT_OIDC_ISSUER"):
        backends.append(OIDC_BACKEND)
    return [*backends, TOKEN_BACKEND]


def auth_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Every setting this module decides, by name (what settings.py sets and tests override)."""
    return {
        "AUTHENTICATION_BACKENDS": authentication_backends(env),
        "SCRIPTHUT_OIDC": oidc_config(env),
        **ldap_settings(env),
    }
