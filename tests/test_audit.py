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
