"""Schedules through the API (runs.api.schedules): the config's keys, every problem named in
one 400, the owner is the caller unless staff, another's schedule is not found."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.models import Backend
from runs.models import ApiToken, AuditEvent, Schedule, Workflow
from tests.test_api import check_against_schema

DOCUMENT = {"tasks": [{"id": "t", "name": "t", "command": "true"}]}


def token_client(user: User) -> Client:
    return Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})


def send(client: Client, method: str, url: str, body: Any = None) -> Any:
    return getattr(client, method)(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def workflow(local_backend: Backend, tmp_path: Path) -> Workflow:
    (tmp_path / "w.json").write_text(json.dumps(DOCUMENT))
    return Workflow.objects.create(name="nightly", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")


NIGHTLY = {"name": "nightly", "workflow": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris"}


def test_make_list_change_delete(workflow: Workflow, user: User) -> None:
    alice = token_client(user)
    made = send(alice, "post", "/api/schedules", NIGHTLY)
    assert made.status_code == 201, made.content
    spec = Client().get("/api/openapi.json").json()
    check_against_schema(spec, "/api/schedules", "post", made)
    check_against_schema(spec, "/api/schedules", "get", alice.get("/api/schedules"))
    check_against_schema(spec, "/api/schedules", "post", send(alice, "post", "/api/schedules", {"cron": "x"}))
    body = made.json()
    assert body["owner"] == "alice" and body["overlap"] == "skip" and body["enabled"] is True
    assert body["next_fire_at"] and body["last_run"] is None
    assert [s["name"] for s in alice.get("/api/schedules").json()] == ["nightly"]
    changed = send(alice, "patch", "/api/schedules/nightly", {"cron": "@hourly", "overlap": "allow"})
    assert changed.status_code == 200 and changed.json()["cron"] == "@hourly"
    assert Schedule.objects.get().overlap == "allow"
    assert alice.delete("/api/schedules/nightly").status_code == 204
    assert not Schedule.objects.exists()
    changes = AuditEvent.objects.filter(action="schedule_changed").values_list("detail__change", flat=True)
    assert sorted(changes) == ["changed", "created", "deleted"]


def test_every_problem_is_named_in_one_400_and_nothing_is_made(workflow: Workflow, user: User) -> None:
    bad = {"name": "", "workflow": "nope", "cron": "61 2 * *", "timezone": "Mars/Olympus", "overlap": "sometimes"}
    answer = send(token_client(user), "post", "/api/schedules", bad)
    assert answer.status_code == 400
    fields = [p["field"] for p in answer.json()["problems"]]
    assert fields == ["name", "workflow", "cron", "timezone", "overlap"]
    text = answer.json()["error"]
    assert "has 4 fields" in text and "Mars/Olympus" in text and "'nope'" in text and "sometimes" in text
    assert not Schedule.objects.exists()


def test_a_source_without_file_and_both_targets_are_refused(workflow: Workflow, user: User) -> None:
    answer = send(token_client(user), "post", "/api/schedules", NIGHTLY | {"source": "files"})
    assert answer.status_code == 400 and "either workflow, or source and file" in answer.json()["error"]


def test_unknown_keys_and_wrong_types_are_400s(workflow: Workflow, user: User) -> None:
    answer = send(token_client(user), "post", "/api/schedules", NIGHTLY | {"when": "soon", "enabled": "perhaps"})
    assert answer.status_code == 400
    assert "when" in answer.json()["error"] and "enabled" in answer.json()["error"]


def test_the_owner_is_the_caller_unless_staff(workflow: Workflow, user: User, bob: User, staff: User) -> None:
    answer = send(token_client(user), "post", "/api/schedules", NIGHTLY | {"owner": "bob"})
    assert answer.status_code == 400 and "only staff" in answer.json()["error"]
    made = send(token_client(staff), "post", "/api/schedules", NIGHTLY | {"owner": "bob"})
    assert made.status_code == 201 and made.json()["owner"] == "bob"
    alice = token_client(user)
    assert alice.get("/api/schedules").json() == []
    assert send(alice, "patch", "/api/schedules/nightly", {"enabled": False}).status_code == 404
    assert alice.delete("/api/schedules/nightly").status_code == 404
    assert send(token_client(bob), "patch", "/api/schedules/nightly", {"enabled": False}).status_code == 200
    reader = Client(headers={"Authorization": f"Token {ApiToken.issue(bob, scope='read')}"})
    assert reader.delete("/api/schedules/nightly").status_code == 403


def test_an_owner_who_may_not_use_the_backend_is_refused(workflow: Workflow, staff: User) -> None:
    outsider = User.objects.create_user("dave", password="pw-dave-1234")
    answer = send(token_client(outsider), "post", "/api/schedules", NIGHTLY)
    assert answer.status_code == 400 and "may not run it" in answer.json()["error"]


def test_enabling_a_stopped_schedule_clears_the_reason(workflow: Workflow, user: User) -> None:
    alice = token_client(user)
    send(alice, "post", "/api/schedules", NIGHTLY)
    Schedule.objects.update(enabled=False, stopped_reason="stopped: ...")
    answer = send(alice, "patch", "/api/schedules/nightly", {"enabled": True})
    assert answer.json()["stopped_reason"] == "" and answer.json()["next_fire_at"]


# -- the /schedules page ------------------------------------------------------------------


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_makes_lists_and_turns_off_a_schedule(workflow: Workflow, user: User) -> None:
    alice = signed_in(user)
    assert 'value="nightly" selected' in alice.get("/schedules?workflow=nightly").content.decode()
    form = NIGHTLY | {"enabled": "on", "overlap": "skip"}
    assert alice.post("/schedules", form).status_code == 302
    page = alice.get("/schedules").content.decode()
    assert 'data-schedule="nightly"' in page and "0 2 * * *" in page and "Europe/Paris" in page
    assert "never" in page  # not fired yet
    alice.post("/schedules/nightly/toggle")
    assert Schedule.objects.get().enabled is False


def test_the_page_names_every_problem_with_a_400(workflow: Workflow, user: User) -> None:
    answer = signed_in(user).post(
        "/schedules", {"name": "x", "workflow": "nightly", "cron": "* *", "timezone": "Nowhere"}
    )
    text = answer.content.decode()
    assert answer.status_code == 400 and "has 2 fields" in text and "&#x27;Nowhere&#x27; is not a known" in text
    assert not Schedule.objects.exists()


def test_the_page_shows_a_stopped_schedule_and_the_last_run(workflow: Workflow, user: User, bob: User) -> None:
    from runs.schedules.fire import fire_due

    nightly = Schedule.objects.create(name="nightly", workflow=workflow, owner=user, cron="@daily")
    assert nightly.next_fire_at is not None
    fire_due(nightly.next_fire_at)
    run = nightly.runs.get()
    page = signed_in(user).get("/schedules").content.decode()
    assert f'href="/runs/{run.pk}"' in page and "started run" in page
    assert "<dt>Schedule</dt>" in signed_in(user).get(f"/runs/{run.pk}").content.decode()
    assert 'data-schedule="nightly"' not in signed_in(bob).get("/schedules").content.decode()
    Schedule.objects.update(enabled=False, stopped_reason="stopped: its owner alice may not run it: gone")
    assert "stopped: its owner alice may not run it: gone" in signed_in(user).get("/schedules").content.decode()


def test_the_admin_checks_a_schedule_as_the_page_does(workflow: Workflow, user: User) -> None:
    """The README says /admin/ manages every model: a schedule there is checked the same way
    (a bad cron was a 500 once the portal tried to fire it)."""
    admin = User.objects.create_superuser("root", password="pw-root-12345")
    client = Client()
    client.force_login(admin)
    form = {"name": "n", "workflow": workflow.pk, "owner": user.pk, "timezone": "Mars/Olympus", "overlap": "skip"}
    refused = client.post("/admin/runs/schedule/add/", form | {"cron": "0 2 30 2 *", "enabled": "on"})
    assert refused.status_code == 200 and not Schedule.objects.exists()
    page = html.unescape(refused.content.decode())
    assert "cron '0 2 30 2 *' never fires (no such date, e.g. 30 February)" in page
    assert "timezone 'Mars/Olympus' is not a known time zone" in page
    made = client.post(
        "/admin/runs/schedule/add/", form | {"cron": "0 2 * * *", "timezone": "Europe/Paris", "enabled": "on"}
    )
    assert made.status_code == 302
    assert Schedule.objects.get(name="n").next_fire_at is not None
