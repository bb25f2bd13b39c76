"""Single sign-on without a directory or provider running: settings from the environment, the
login page with and without the SSO button, OpenID Connect failures ending on the login page,
and what the OpenID Connect backend refuses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django_auth_ldap.config import GroupOfNamesType, PosixGroupType

from scripthut_site.sso import env as sso_env
from tests.services import free_port
from tests.sso import configure

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings

OIDC_ENV = {
    "SCRIPTHUT_OIDC_ISSUER": "http://127.0.0.1:9/",
    "SCRIPTHUT_OIDC_CLIENT_ID": "portal",
    "SCRIPTHUT_OIDC_CLIENT_SECRET": "s3cret-client",
    "SCRIPTHUT_OIDC_NAME": "Campus login",
    "SCRIPTHUT_OIDC_STAFF_GROUP": "admins",
}
# django-axes' lockout check must come first; API tokens (throttled like passwords) come last.
AXES, TOKENS = sso_env.AXES_BACKEND, sso_env.TOKEN_BACKEND
LDAP_ENV = {
    "SCRIPTHUT_LDAP_URL": "ldap://ldap.example.org",
    "SCRIPTHUT_LDAP_BIND_PASSWORD": "s3cret-bind",
    "SCRIPTHUT_LDAP_USER_SEARCH": "ou=people,dc=example,dc=org",
    "SCRIPTHUT_LDAP_GROUP_SEARCH": "ou=groups,dc=example,dc=org",
}


# --- settings from the environment -------------------------------------------------------------
def test_nothing_set_means_local_accounts_only() -> None:
    assert sso_env.auth_settings({}) == {
        "AUTHENTICATION_BACKENDS": [AXES, sso_env.MODEL_BACKEND, TOKENS],
        "SCRIPTHUT_OIDC": None,
    }


def test_ldap_settings_with_a_user_search() -> None:
    values = sso_env.auth_settings(LDAP_ENV)
    assert values["AUTHENTICATION_BACKENDS"] == [AXES, sso_env.MODEL_BACKEND, sso_env.LDAP_BACKEND, TOKENS]
    assert values["AUTH_LDAP_SERVER_URI"] == "ldap://ldap.example.org"
    assert values["AUTH_LDAP_USER_SEARCH"].base_dn == "ou=people,dc=example,dc=org"
    assert "(uid=%(user)s)" in values["AUTH_LDAP_USER_SEARCH"].filterstr
    assert isinstance(values["AUTH_LDAP_GROUP_TYPE"], PosixGroupType)
    assert values["AUTH_LDAP_MIRROR_GROUPS"] is True
    assert "AUTH_LDAP_USER_FLAGS_BY_GROUP" not in values


def test_ldap_settings_with_a_dn_template_and_a_staff_group() -> None:
    values = sso_env.ldap_settings(
        {
            "SCRIPTHUT_LDAP_URL": "ldaps://ldap.example.org",
            "SCRIPTHUT_LDAP_USER_DN_TEMPLATE": "uid=%(user)s,ou=people,dc=example,dc=org",
            "SCRIPTHUT_LDAP_GROUP_SEARCH": "ou=groups,dc=example,dc=org",
            "SCRIPTHUT_LDAP_GROUP_TYPE": "groupOfNames",
            "SCRIPTHUT_LDAP_STAFF_GROUP": "cn=admins,ou=groups,dc=example,dc=org",
        }
    )
    assert values["AUTH_LDAP_USER_DN_TEMPLATE"] == "uid=%(user)s,ou=people,dc=example,dc=org"
    assert "AUTH_LDAP_USER_SEARCH" not in values
    assert isinstance(values["AUTH_LDAP_GROUP_TYPE"], GroupOfNamesType)
    assert values["AUTH_LDAP_USER_FLAGS_BY_GROUP"] == {"is_staff": "cn=admins,ou=groups,dc=example,dc=org"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCRIPTHUT_LDAP_URL": "ldap://x"}, "SCRIPTHUT_LDAP_USER_SEARCH"),
        ({**LDAP_ENV, "SCRIPTHUT_LDAP_GROUP_TYPE": "nisNetgroup"}, "posixGroup or groupOfNames"),
        ({**LDAP_ENV, "SCRIPTHUT_LDAP_GROUP_SEARCH": "", "SCRIPTHUT_LDAP_STAFF_GROUP": "cn=a"}, "GROUP_SEARCH"),
        ({"SCRIPTHUT_OIDC_ISSUER": "https://idp.example.org"}, "SCRIPTHUT_OIDC_CLIENT_SECRET"),
    ],
)
def test_incomplete_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        sso_env.auth_settings(env)


def test_oidc_settings_keep_the_secret_out_of_repr() -> None:
    values = sso_env.auth_settings(OIDC_ENV)
    assert values["AUTHENTICATION_BACKENDS"] == [AXES, sso_env.MODEL_BACKEND, sso_env.OIDC_BACKEND, TOKENS]
    config = values["SCRIPTHUT_OIDC"]
    assert (config.name, config.groups_claim, config.username_claim) == ("Campus login", "groups", "preferred_username")
    assert config.metadata_url == "http://127.0.0.1:9/.well-known/openid-configuration"
    assert "s3cret-client" not in repr(config)


# --- the login page ----------------------------------------------------------------------------
def test_login_page_without_sso_is_the_plain_form(client: Client, db: None) -> None:
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with" not in page and "sso-button" not in page  # (a bare "sso" may be in the CSRF token)
    assert 'name="username"' in page and 'name="password"' in page
    assert '<button type="submit" class="btn primary">Log in</button>' in page
    assert client.get("/accounts/oidc/login/").status_code == 404
    assert client.get("/accounts/oidc/callback/").status_code == 404


def test_login_page_shows_the_sso_button(client: Client, settings: Settings, db: None) -> None:
    configure(settings, {**OIDC_ENV, **LDAP_ENV})
    page = client.get("/accounts/login/?next=/runs").content.decode()
    assert (
        '<a class="btn primary sso-button" href="/accounts/oidc/login/?next=/runs">Sign in with Campus login</a>'
        in page
    )
    assert "/static/scripthut/sso.css" in page
    assert 'name="password"' in page  # local (and LDAP) accounts keep the form
    assert "s3cret" not in page
    assert client.get("/static/scripthut/sso.css").status_code == 200  # served by the portal itself


# --- OpenID Connect failures end on the login page ---------------------------------------------
def follow_to_login(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    return client.get(response["Location"]).content.decode()


def test_an_unreachable_provider_is_a_clean_failure(
    client: Client, settings: Settings, db: None, caplog: pytest.LogCaptureFixture
) -> None:
    configure(settings, {**OIDC_ENV, "SCRIPTHUT_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}"})
    page = follow_to_login(client, "/accounts/oidc/login/")
    assert "Sign-in with Campus login failed" in page
    assert "sign-in with Campus login failed" in caplog.text and "s3cret-client" not in caplog.text


@pytest.mark.parametrize(
    "query",
    ["?code=abc&state=never-issued", "?error=access_denied&error_description=no&state=x", ""],
)
def test_a_bad_answer_from_the_provider_is_a_clean_failure(
    client: Client, settings: Settings, db: None, query: str
) -> None:
    configure(settings, OIDC_ENV)
    page = follow_to_login(client, f"/accounts/oidc/callback/{query}")
    assert "Sign-in with Campus login failed" in page
    assert client.get("/").status_code == 302  # still signed out


# --- the OpenID Connect backend --------------------------------------------------------------
def a_request() -> HttpRequest:
    """Sign-ins always come with their request: django-axes (first backend) counts failures by address."""
    return RequestFactory().get("/")


def test_claims_make_a_user_with_groups_and_staff(settings: Settings, db: None) -> None:
    configure(settings, OIDC_ENV)
    claims = {"sub": "1", "preferred_username": "dave", "email": "d@x.org", "groups": ["admins", "physics"]}
    dave = authenticate(a_request(), oidc_claims=claims)
    assert dave is not None and dave.username == "dave" and dave.is_staff and not dave.has_usable_password()
    assert sorted(dave.groups.values_list("name", flat=True)) == ["admins", "physics"]

    dave.groups.add(Group.objects.create(name="granted-by-hand"))
    dave = authenticate(a_request(), oidc_claims={**claims, "groups": "chemistry"})  # a single group as a string
    assert dave is not None and not dave.is_staff
    assert list(dave.groups.values_list("name", flat=True)) == ["chemistry"]


def test_the_backend_refuses_claims_without_a_username_and_local_password_accounts(
    settings: Settings, db: None
) -> None:
    configure(settings, OIDC_ENV)
    assert authenticate(a_request(), oidc_claims={"sub": "1"}) is None
    User.objects.create_user("admin", password="pw-local-admin")
    assert (
        authenticate(a_request(), oidc_claims={"sub": "2", "preferred_username": "admin", "groups": ["admins"]}) is None
    )
    assert not User.objects.get(username="admin").groups.exists()
    assert (
        authenticate(a_request(), username="admin", password="pw-local-admin") is not None
    )  # the password still works
