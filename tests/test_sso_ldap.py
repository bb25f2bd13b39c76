"""LDAP sign-in through /accounts/login/ against a real slapd (tests/ldap_server.py).

The portal is configured the way settings.py does it, from SCRIPTHUT_LDAP_* variables
(scripthut_site.sso.env.auth_settings), applied with pytest-django's ``settings`` fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.services import free_port
from tests.sso import configure

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response
    from pytest_django.fixtures import Settings

    from tests.ldap_server import Slapd

pytest_plugins = ["tests.ldap_server"]

pytestmark = pytest.mark.services

FAILED = "Your username and password didn"  # ... 't match. Please try again.


@pytest.fixture
def directory(slapd: Slapd, settings: Settings, db: None) -> Slapd:
    """The portal signs in against the test slapd."""
    configure(settings, slapd.env())
    return slapd


def log_in(username: str, password: str) -> tuple[Client, Response]:
    client = Client()
    return client, client.post("/accounts/login/", {"username": username, "password": password})


def groups(username: str) -> list[str]:
    return sorted(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_directory_users_log_in_with_their_groups(directory: Slapd) -> None:
    client, response = log_in("alice", directory.passwords["alice"])
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200

    alice = User.objects.get(username="alice")
    assert (alice.first_name, alice.last_name, alice.email) == ("Alice", "Adams", "alice@scripthut.test")
    assert groups("alice") == ["physics"]
    assert not alice.is_staff and not alice.has_usable_password()  # the directory keeps the password

    _, response = log_in("bob", directory.passwords["bob"])
    assert response.status_code == 302
    assert groups("bob") == ["chemistry", "hut-admins"]
    assert User.objects.get(username="bob").is_staff  # SCRIPTHUT_LDAP_STAFF_GROUP


def test_group_changes_in_the_directory_apply_at_the_next_login(directory: Slapd) -> None:
    log_in("alice", directory.passwords["alice"])
    assert groups("alice") == ["physics"]
    try:
        directory.set_members("physics", [])
        directory.set_members("chemistry", ["bob", "alice"])
        _, response = log_in("alice", directory.passwords["alice"])
        assert response.status_code == 302
        assert groups("alice") == ["chemistry"]
    finally:
        directory.set_members("physics", ["alice"])
        directory.set_members("chemistry", ["bob"])
    assert directory.members("chemistry") == ["bob"]


def test_a_wrong_password_is_a_normal_failed_login(directory: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    for username, password in [("alice", "not-her-password"), ("alice", directory.passwords["bob"]), ("nobody", "x")]:
        client, response = log_in(username, password)
        assert response.status_code == 200
        assert FAILED in response.content.decode()
        assert client.get("/").status_code == 302  # still anonymous
    assert not User.objects.filter(username__in=["alice", "nobody"]).exists()
    assert directory.env()["SCRIPTHUT_LDAP_BIND_PASSWORD"] not in caplog.text


def test_an_unreachable_directory_is_a_normal_failed_login(
    slapd: Slapd, settings: Settings, db: None, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**slapd.env(), "SCRIPTHUT_LDAP_URL": f"ldap://127.0.0.1:{free_port()}/"}  # nothing listens there
    configure(settings, env)
    bind_password = env["SCRIPTHUT_LDAP_BIND_PASSWORD"]
    _, response = log_in("alice", slapd.passwords["alice"])
    assert response.status_code == 200
    assert FAILED in response.content.decode()
    assert "SERVER_DOWN" in caplog.text  # django-auth-ldap says why in the log ...
    assert bind_password not in caplog.text and bind_password not in response.content.decode()  # ... without secrets

    # Local accounts do not depend on the directory.
    User.objects.create_user("local-admin", password="pw-local-admin")
    _, response = log_in("local-admin", "pw-local-admin")
    assert response.status_code == 302 and response["Location"] == "/"
