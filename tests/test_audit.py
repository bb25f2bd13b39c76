"""The audit trail: who did what and when, append-only, readable by staff."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from runs.actions import create_run
from runs.models import AppendOnly, AuditEvent

pytestmark = pytest.mark.django_db

Action = AuditEvent.Action
TASKS = [{"id": "a", "name": "a", "command": "true"}]


def _trail(*actions: str) -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.order_by("id")
    if actions:
        events = events.filter(action__in=actions)
    return [(e.actor_name, e.action, e.target) for e in events]


def test_logins_and_failed_logins_are_recorded_without_the_password(client: Client, user: User) -> None:
    login = reverse("login")
    client.post(login, {"username": "alice", "password": "wrong-password-1"}, REMOTE_ADDR="10.1.2.3")
    client.post(login, {"username": "alice", "password": "pw-alice-123"}, REMOTE_ADDR="10.1.2.3")
    client.post(reverse("logout"))
    assert _trail(Action.LOGIN_FAILED, Action.LOGIN, Action.LOGOUT) == [
        ("alice", Action.LOGIN_FAILED, "alice"),
        ("alice", Action.LOGIN, "alice"),
        ("alice", Action.LOGOUT, "alice"),
    ]
    failed = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    assert failed.actor is None and failed.address == "10.1.2.3"
    assert "wrong-password-1" not in str(failed.detail)


def test_run_actions_name_who_did_them(client: Client, user: User, staff: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="w")
    client.force_login(staff)
    client.post(reverse("run_cancel", args=[run.pk]))
    client.post(reverse("run_relaunch", args=[run.pk]))
    assert _trail(Action.RUN_CREATED, Action.RUN_CANCELLED, Action.RUN_RELAUNCHED) == [
        ("alice", Action.RUN_CREATED, f"run {run.pk}"),
        ("carol", Action.RUN_CANCELLED, f"run {run.pk}"),
        ("carol", Action.RUN_RELAUNCHED, f"run {run.pk}"),
    ]


def test_admin_changes_to_backends_and_group_access_are_recorded(client: Client, staff: User, user: User) -> None:
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    response = client.post(
        reverse("admin:backends_backend_add"),
        {"name": "hpc2", "kind": "local", "settings": "{}", "max_concurrent": 3, "enabled": "on", "status": "unknown"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user.groups.add(Group.objects.create(name="physics"))
    changes = [(who, action, target) for who, action, target in _trail() if action != Action.LOGIN]
    assert ("carol", Action.BACKEND_CHANGED, "backend hpc2") in changes
    assert ("", Action.ACCESS_CHANGED, "user alice: groups add physics") in changes


def test_the_trail_is_append_only(user: User) -> None:
    from runs.audit import trail as audit

    event = audit.record(Action.LOGIN, "alice", actor=user)
    event.target = "someone else"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().update(target="x")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).target == "alice"


def test_staff_read_it_on_a_page_and_in_the_admin_others_do_not(client: Client, user: User, staff: User) -> None:
    client.force_login(user)
    assert client.get(reverse("audit_trail")).status_code == 403
    client.force_login(staff)
    page = client.get(reverse("audit_trail")).content.decode()
    assert "Audit trail" in page and "carol" in page  # the staff login itself
    staff.is_superuser = True
    staff.save()
    assert client.get(reverse("admin:runs_auditevent_changelist")).status_code == 200
    event = AuditEvent.objects.first()
    assert event is not None
    change = client.post(reverse("admin:runs_auditevent_change", args=[event.pk]), {"target": "forged"})
    assert change.status_code == 403 and AuditEvent.objects.get(pk=event.pk).target != "forged"


# -- refusals, users' privileges, preferences (issue 18, finding 8) ---------------------------


def _refusals() -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.filter(action__in=[Action.ACCESS_REFUSED, Action.SUBMISSION_REFUSED]).order_by("id")
    return [(e.actor_name, e.target, e.detail.get("reason", "")) for e in events]


def test_every_refusal_of_a_page_or_the_api_is_recorded_once_with_its_reason(user: User) -> None:
    import json

    from backends.config import validate_backend_settings
    from runs.models import ApiToken, Workflow
    from sources.models import Source

    staff_only = Backend.objects.create(name="here", kind=Backend.Kind.LOCAL)  # shared with nobody
    Workflow.objects.create(name="wf", backend=staff_only, command="echo '[]'")
    Source.objects.create(
        name="src", kind=Source.Kind.PATH, backend=staff_only, path="/data", workflow_files=["w.json"]
    )
    ssh = {"host": "127.0.0.1", "port": 9, "identity": "per_user"}
    hpc = Backend.objects.create(name="hpc", kind="slurm", settings=validate_backend_settings("slurm", {"ssh": ssh}))
    hpc.allowed_groups.add(Group.objects.create(name="physics"))
    dave = User.objects.create_user("dave", password="pw-dave-12345")
    followers = Group.objects.create(name="followers")
    dave.groups.add(followers)
    open_backend = Backend.objects.create(name="open", kind="slurm")
    run = create_run(owner=user, backend=open_backend, payload=TASKS, workflow_name="w")
    run.shared_with.add(followers)

    page = Client()
    page.force_login(dave)
    follow = f"run {run.pk} is shared with you to follow; only its owner or staff may change it"
    local = "backend 'here' runs tasks on the portal host: only staff may use it"
    pages = {
        "POST /workflows/wf/run": (page.post("/workflows/wf/run"), local),
        "POST /workflows/wf/dry-run": (page.post("/workflows/wf/dry-run"), local),
        "POST /sources/src/sync": (page.post("/sources/src/sync"), local),
        "POST /sources/src/workflows/w.json/run": (page.post("/sources/src/workflows/w.json/run"), local),
        "POST /settings/identities/hpc": (
            page.post(reverse("identity_save", args=["hpc"]), {"username": "dave"}),
            "backend 'hpc' is shared with the groups physics, and you are in none of them",
        ),
        f"POST /runs/{run.pk}/cancel": (page.post(reverse("run_cancel", args=[run.pk])), follow),
        "GET /audit": (page.get("/audit"), "the audit trail is for staff"),
    }
    assert {target: response.status_code for target, (response, _) in pages.items()} == dict.fromkeys(pages, 403)

    api = Client(headers={"Authorization": f"Token {ApiToken.issue(dave)}"})
    refused = api.post(f"/api/runs/{run.pk}/relaunch")
    submitted = api.post("/api/runs", json.dumps({"backend": "here", "workflow": TASKS}), "application/json")
    assert (refused.status_code, submitted.status_code) == (403, 403)

    browser = Client(enforce_csrf_checks=True)  # a form posted from another site
    browser.force_login(dave)
    assert browser.post(reverse("run_cancel", args=[run.pk])).status_code == 403

    assert _refusals() == [
        *(("dave", target, reason) for target, (_, reason) in pages.items()),
        ("dave", f"POST /api/runs/{run.pk}/relaunch", follow),
        ("dave", "backend here", local),  # the refused submission, recorded by runs.actions, and only once
        ("dave", f"POST /runs/{run.pk}/cancel", "CSRF check failed: CSRF cookie not set."),
    ]
    assert AuditEvent.objects.filter(action=Action.ACCESS_REFUSED).exclude(actor=dave).count() == 0


def test_admin_changes_of_a_users_privileges_are_recorded(client: Client, staff: User, user: User) -> None:
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    form = {
        "username": "alice",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "groups": [],
    }
    response = client.post(reverse("admin:auth_user_change", args=[user.pk]), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    user.refresh_from_db()
    assert user.is_staff and user.is_superuser
    changes = AuditEvent.objects.filter(action=Action.USER_CHANGED, target="user alice")
    assert [(e.actor_name, e.detail) for e in changes] == [
        ("carol", {"change": "changed", "values": {"is_staff": [False, True], "is_superuser": [False, True]}})
    ]
    # The admin form also took alice out of her group: that is recorded too.
    assert ("carol", Action.ACCESS_CHANGED, "user alice: groups remove local-users") in _trail(Action.ACCESS_CHANGED)

    client.post(reverse("admin:auth_user_change", args=[user.pk]), form | {"is_superuser": ""})
    last = AuditEvent.objects.filter(action=Action.USER_CHANGED).order_by("id").last()
    assert last is not None and last.detail["values"] == {"is_superuser": [True, False]}
    client.force_login(user)  # a login saves the user (last_login): no privilege changed, nothing recorded
    assert AuditEvent.objects.filter(action=Action.USER_CHANGED, target="user alice").count() == 2
    client.force_login(staff)
    client.post(reverse("admin:auth_user_delete", args=[user.pk]), {"post": "yes"})
    assert _trail(Action.USER_CHANGED)[-1] == ("carol", Action.USER_CHANGED, "user alice")
    deleted = AuditEvent.objects.filter(action=Action.USER_CHANGED).order_by("id").last()
    assert deleted is not None and deleted.detail == {"change": "deleted"}


def test_notification_preference_changes_are_recorded_without_the_webhook(client: Client, user: User) -> None:
    from tests.test_notify_pages import SLACK

    client.force_login(user)
    client.post("/settings/notifications", {"on": "always", "email": "me@example.org", "new_webhook_url": SLACK})
    client.post("/settings/notifications", {"on": "always", "email": "other@example.org"})  # keeps the webhook
    client.post("/settings/notifications", {"on": "always", "email": "other@example.org", "remove_webhook": "on"})
    events = AuditEvent.objects.filter(action=Action.PREFERENCES_CHANGED).order_by("id")
    assert [(e.actor_name, e.target) for e in events] == [("alice", "notifications of alice")] * 3
    assert [e.detail for e in events] == [
        {
            "change": "created",
            "values": {
                "on": "always",
                "email": "me@example.org",
                "webhook_url": "set",
                "webhook_slack": False,
                "first_task_started": False,
            },
        },
        {"change": "changed", "values": {"email": ["me@example.org", "other@example.org"]}},
        {"change": "changed", "values": {"webhook_url": "changed"}},
    ]
    assert "very-secret-token" not in str(list(AuditEvent.objects.values()))
