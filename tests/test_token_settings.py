"""API tokens people manage themselves (issue 20): ``/settings/tokens`` makes named tokens
(shown once) with a scope and an expiry (90 days by default, at most the site's maximum),
shows when and from where each was last used, and revokes them; staff see and revoke
anyone's; both are audited. An expired or revoked token is a 401 saying so, and a read
token is a 403 on every API operation that changes something."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import get_resolver
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.models import ApiToken, AuditEvent, PortalSettings, Run

TASKS = [{"id": "a", "name": "A", "command": "true"}]


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_token(client: Client, **fields: object) -> str:
    response = client.post("/settings/tokens", {"name": "laptop", "scope": "write", "days": 90} | fields)
    assert response.status_code == 200, response.content[:500]
    found = re.search(r'id="new-token-key">([^<]+)<', response.content.decode())
    assert found, "the new key is shown"
    return found.group(1)


def api(key: str) -> Client:
    return Client(headers={"Authorization": f"Token {key}"})


def test_a_token_made_on_the_page_is_shown_once_and_works(user: User) -> None:
    page = signed_in(user)
    key = make_token(page)
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert (token.user, token.name, token.scope) == (user, "laptop", "write")
    assert token.expires_at is not None
    assert timedelta(days=89, hours=23) < token.expires_at - timezone.now() <= timedelta(days=90)
    assert key not in page.get("/settings/tokens").content.decode()  # shown once
    assert api(key).get("/api/me").json()["username"] == user.username
    listing = page.get("/settings/tokens").content.decode()
    assert "laptop" in listing and "127.0.0.1" in listing  # last used, and from where
    event = AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_CREATED)
    assert event.actor == user and event.detail["scope"] == "write" and key not in json.dumps(event.detail)


def test_an_expired_token_is_a_401_saying_so(user: User) -> None:
    key = make_token(signed_in(user), days=30)
    assert api(key).get("/api/runs").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(days=30, minutes=1)):
        refused = api(key).get("/api/runs")
    assert refused.status_code == 401
    assert re.fullmatch(r"API token .{4}… expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC", refused.json()["error"])


def test_a_revoked_token_is_a_401_saying_so(user: User, bob: User) -> None:
    page = signed_in(user)
    key = make_token(page)
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert signed_in(bob).post(f"/settings/tokens/{token.pk}/revoke").status_code == 404  # not bob's
    assert page.post(f"/settings/tokens/{token.pk}/revoke").status_code == 302
    refused = api(key).get("/api/runs")
    assert refused.status_code == 401 and "was revoked on" in refused.json()["error"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_REVOKED, actor=user).count() == 1


def test_staff_list_and_revoke_anyones_and_set_the_longest_expiry(user: User, staff: User) -> None:
    key = make_token(signed_in(user), name="ci-runner")
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    admin = signed_in(staff)
    assert "ci-runner" in admin.get("/settings/tokens").content.decode()
    assert "ci-runner" not in signed_in(User.objects.create_user("other")).get("/settings/tokens").content.decode()
    assert admin.post(f"/settings/tokens/{token.pk}/revoke").status_code == 302
    assert api(key).get("/api/runs").status_code == 401
    assert AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_REVOKED).actor == staff

    assert signed_in(user).post("/settings/tokens/max-days", {"max_days": 5}).status_code == 403
    assert admin.post("/settings/tokens/max-days", {"max_days": 30}).status_code == 302
    assert PortalSettings.load().token_max_days == 30
    too_long = signed_in(user).post("/settings/tokens", {"name": "x", "scope": "read", "days": 31})
    assert too_long.status_code == 400 and "at most 30 days on this portal" in too_long.content.decode()
    assert ApiToken.objects.count() == 1  # nothing made
    assert 'value="30"' in signed_in(user).get("/settings/tokens").content.decode()  # the default within it


def test_bad_token_forms_name_every_problem(user: User) -> None:
    response = signed_in(user).post("/settings/tokens", {"name": "", "scope": "admin", "days": 0})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Name: This field is required." in body and "Scope: " in body and "Expires after (days): " in body
    assert ApiToken.objects.count() == 0


def _api_operations() -> list[tuple[str, str]]:
    """(method, path) of every API operation, with its parameters filled in."""
    from runs.api.routes import api as ninja_api

    found = []
    for prefix, router in ninja_api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                for method in operation.methods:
                    found.append((method, "/api" + prefix + re.sub(r"{(\w+:)?(\w+)}", r"\2-x", path)))
    return found


def test_a_read_token_changes_nothing(user: User, local_backend: Backend) -> None:
    assert get_resolver()  # the URL conf is loaded: every operation is registered
    run = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="t")
    reader = api(make_token(signed_in(user), scope="read"))
    assert reader.get("/api/me").json()["token_scope"] == "read"
    changing = [(m, p) for m, p in _api_operations() if m not in ("GET",) and not p.endswith("/dry-run")]
    assert len(changing) == 10  # start, cancel, relaunch, sync; make, change, delete a schedule
    for method, path in changing:
        response = getattr(reader, method.lower())(path.replace("run_id-x", run.pk), content_type="application/json")
        assert response.status_code == 403, (method, path, response.content)
        assert "read-only" in response.json()["error"]
    assert Run.objects.count() == 1 and run.tasks.get().state == "pending"
    assert reader.get(f"/api/runs/{run.pk}").status_code == 200
    dry = reader.post("/api/runs/dry-run", json.dumps({"backend": "local", "workflow": TASKS}), "application/json")
    assert dry.status_code == 200  # a dry run stores nothing


def test_operator_tokens_never_expire(user: User) -> None:
    key = ApiToken.issue(user)
    with time_machine.travel(timezone.now() + timedelta(days=3650)):
        assert api(key).get("/api/runs").status_code == 200
