"""Login throttling (django-axes, scripthut_site.lockout): passwords and API tokens.

Five failures (the default) per username or per address lock them out for the cool-off
time (15 minutes by default): the login page says so with a 429, the API answers 429
``{"error": ...}`` with a Retry-After, the audit trail and the log record it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from time_machine import TimeMachineFixture

from runs.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

LIMIT = 5
COOL_OFF = 15 * 60
ALICE_PASSWORD = "pw-alice-123"  # tests.conftest's user


def log_in(client: Client, username: str, password: str, address: str = "10.0.0.1") -> tuple[int, str]:
    response = client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)
    return response.status_code, response.content.decode()


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, username: str, times: int, address: str = "10.0.0.1") -> list[int]:
    return [log_in(client, username, f"wrong-{i}", address)[0] for i in range(times)]


def end_cool_off(time_machine: TimeMachineFixture) -> None:
    time_machine.move_to(timezone.now() + timedelta(seconds=COOL_OFF + 1), tick=True)


def test_repeated_wrong_passwords_lock_the_account_for_the_cool_off(
    client: Client, user: User, caplog: pytest.LogCaptureFixture, time_machine: TimeMachineFixture
) -> None:
    # Four failures are ordinary ones; the fifth reaches the limit and is answered with the lockout.
    assert fail(client, "alice", LIMIT) == [200] * (LIMIT - 1) + [429]
    status, page = log_in(client, "alice", ALICE_PASSWORD)  # the right password, too late
    assert status == 429 and not logged_in(client)
    assert "Too many failed sign-ins for this account or from this address. Try again in 15 minutes." in page
    assert 'name="username"' in page  # the login page, not a bare error
    # Per username: another address does not help.
    assert log_in(client, "alice", ALICE_PASSWORD, address="10.0.0.2")[0] == 429
    locking = [r.getMessage() for r in caplog.records if "Locking out" in r.getMessage()]
    assert len(locking) == 1 and 'username: "alice"' in locking[0] and 'ip_address: "10.0.0.1"' in locking[0]
    events = AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_LOCKED_OUT)
    assert events.exists() and {e.target for e in events} == {"alice"}

    end_cool_off(time_machine)
    assert log_in(client, "alice", ALICE_PASSWORD)[0] == 302 and logged_in(client)


def test_repeated_failures_from_one_address_lock_the_address(client: Client, user: User) -> None:
    for name in ("mallory", "eve", "trent", "oscar", "peggy"):
        fail(client, name, 1, address="10.6.6.6")
    assert log_in(client, "alice", ALICE_PASSWORD, address="10.6.6.6")[0] == 429  # any user, from there
    assert log_in(client, "alice", ALICE_PASSWORD, address="10.0.0.7")[0] == 302  # alice, from elsewhere


def test_the_lockout_response_has_a_retry_after(client: Client, user: User) -> None:
    fail(client, "alice", LIMIT)
    response = client.post(reverse("login"), {"username": "alice", "password": "x"}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429
    assert COOL_OFF - 60 < int(response["Retry-After"]) <= COOL_OFF


def test_the_admin_login_is_throttled_too(client: Client, staff: User) -> None:
    for i in range(LIMIT):
        client.post("/admin/login/", {"username": "carol", "password": f"wrong-{i}"}, REMOTE_ADDR="10.0.0.3")
    response = client.post("/admin/login/", {"username": "carol", "password": "pw-carol-123"}, REMOTE_ADDR="10.0.0.3")
    assert response.status_code == 429 and "Too many failed sign-ins" in response.content.decode()
    assert not logged_in(client)


def api_get(token: str, address: str) -> tuple[int, dict[str, str], str]:
    response = Client(headers={"Authorization": f"Token {token}"}).get("/api/runs", REMOTE_ADDR=address)
    return response.status_code, response.json(), response.get("Retry-After", "")


def test_repeated_invalid_tokens_from_one_address_get_429(user: User, time_machine: TimeMachineFixture) -> None:
    good = ApiToken.issue(user)
    statuses = [api_get(f"not-a-token-{i}", "10.9.9.9")[0] for i in range(LIMIT)]
    assert statuses == [401] * (LIMIT - 1) + [429]

    status, body, retry_after = api_get(good, "10.9.9.9")  # even a good token, from that address
    assert status == 429 and body.keys() == {"error"} and "Too many failed sign-ins" in body["error"]
    assert COOL_OFF - 60 < int(retry_after) <= COOL_OFF
    assert api_get(good, "10.1.1.1")[0] == 200  # other addresses are not affected
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILED, target="API token").exists()

    end_cool_off(time_machine)
    assert api_get(good, "10.9.9.9")[0] == 200


def test_token_failures_from_many_addresses_lock_no_one(user: User) -> None:
    # Failures without a username are counted per address only, never under one shared key.
    good = ApiToken.issue(user)
    for i in range(LIMIT + 2):
        api_get("not-a-token", f"10.2.0.{i}")
    assert api_get(good, "10.2.0.200")[0] == 200
