"""Pages that explain (issue 21, findings 5, 6, 8, 9, 11) without a browser; the same
pages in Chromium are in tests/test_explain_browser.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from backends.base import JobState, JobStatus, PollResult
from backends.models import Backend
from backends.registry import BACKENDS
from runs.actions import create_run
from runs.engine import poll
from runs.models import PortalSettings, Run, Task
from runs.web.templatetags.costing import hours
from runs.web.timeline import Span
from tests.conftest import LOCAL_USERS

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


# -- 5: a user with no backend access ---------------------------------------------------


def test_a_user_without_access_is_told_what_exists_and_whom_to_ask(client: Client, local_backend: Backend) -> None:
    User.objects.create_user("ops", email="ops@example.org", is_staff=True)
    dave = User.objects.create_user("dave")
    client.force_login(dave)
    for name in ("dashboard", "workflow_list", "run_list"):
        page = client.get(reverse(name)).content.decode()
        assert "You have no access to any backend yet." in page, name
        assert "This portal has 1 backend" in page and 'href="mailto:ops@example.org"' in page, name
        assert "No backends configured." not in page and "Start one from" not in page, name
    PortalSettings.objects.update_or_create(pk=1, defaults={"contact": "the HPC desk, hpc@example.org"})
    assert "Ask the HPC desk, " in client.get(reverse("dashboard")).content.decode()
    # A user who may use a backend is not told so.
    dave.groups.add(Group.objects.get(name=LOCAL_USERS))
    assert "no access" not in client.get(reverse("dashboard")).content.decode()


# -- 6: styled 404 and 500 --------------------------------------------------------------


def test_another_users_run_is_a_styled_404(client: Client, user: User, bob: User, local_backend: Backend) -> None:
    run = create_run(
        owner=user, backend=local_backend, payload=[{"id": "a", "name": "A", "command": "true"}], workflow_name="w"
    )
    client.force_login(bob)
    response = client.get(reverse("run_detail", args=[run.pk]))
    page = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in page and "scripthut/style.css" in page and 'class="mainnav"' in page
    assert "or it is not yours to see" in page


def test_a_server_error_is_a_styled_500() -> None:
    response = server_error(RequestFactory().get("/runs/x"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "<h1>Server error</h1>" in page and "scripthut/style.css" in page


# -- 8: timeline ticks at round times ---------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "labels"),
    [
        (4.5, ["0s", "1s", "2s", "3s", "4s"]),
        (9, ["0s", "2s", "4s", "6s", "8s"]),
        (59, ["0s", "10s", "20s", "30s", "40s", "50s"]),
        (270, ["0s", "1m", "2m", "3m", "4m"]),
        (9000, ["0s", "30m", "1h", "1h 30m", "2h", "2h 30m"]),
        (100_000, ["0s", "6h", "12h", "18h", "1d"]),
    ],
)
def test_timeline_ticks_are_at_round_times(seconds: float, labels: list[str]) -> None:
    ticks = Span(T0, T0 + timedelta(seconds=seconds)).ticks()
    assert [label for _, label in ticks] == labels
    step = 100 * (ticks[1][0] - ticks[0][0]) / 100
    assert all(abs((b[0] - a[0]) - step) < 1e-9 for a, b in zip(ticks, ticks[1:], strict=False))


# -- 9: times in order on every backend -------------------------------------------------


def test_local_tasks_times_are_in_order_and_their_wait_is_shown(
    user: User, local_backend: Backend, run_to_end: Any
) -> None:
    local_backend.max_concurrent = 20
    local_backend.save()
    tasks = [{"id": f"t{i}", "name": "T", "command": "true"} for i in range(40)]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="order"))
    for task in Task.objects.filter(run=run):
        assert task.submitted_at and task.started_at and task.finished_at, task.task_id
        assert task.submitted_at <= task.started_at <= task.finished_at, task.task_id
        assert task.queue_wait_seconds is not None and task.queue_wait_seconds >= 0, task.task_id


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_times_are_in_order_whatever_clock_the_backend_has(kind: str, user: User) -> None:
    """Every kind's poll goes through the engine's poll phase: a scheduler whose clock is
    coarser or behind the portal's (Slurm's whole seconds) still gives submitted <= started
    <= finished, and a queue wait."""
    backend = Backend.objects.create(name=kind, kind=kind)
    run = create_run(
        owner=User.objects.create(username="root2", is_staff=True),
        backend=backend,
        payload=[{"id": "a", "name": "A", "command": "true"}],
        workflow_name="w",
    )
    sent = T0 + timedelta(microseconds=700_000)
    Task.objects.filter(run=run).update(state="submitted", job_id="j1", submitted_at=sent)

    def answer(state: JobState, finished: datetime | None = None) -> SimpleNamespace:
        status = JobStatus("j1", state, exit_code=0, started_at=T0, finished_at=finished)
        return SimpleNamespace(poll=lambda ids: PollResult({"j1": status}), read_ends_every=0.0)

    poll.poll_jobs(backend, answer(JobState.RUNNING), set())  # type: ignore[arg-type]
    poll.poll_jobs(backend, answer(JobState.COMPLETED, T0), set())  # type: ignore[arg-type]
    task = Task.objects.get(run=run)
    assert task.state == "completed"
    assert task.submitted_at and task.started_at and task.finished_at
    assert task.submitted_at <= task.started_at <= task.finished_at
    assert task.queue_wait_seconds == 0


# -- 11: short tasks on /usage; run_as in the admin -------------------------------------


def test_short_tasks_cpu_hours_are_not_zero() -> None:
    assert [hours(h) for h in (0, 0.00004, 0.0043, 0.29, 3.25, 1234.56)] == [
        "0",
        "<0.0001",
        "0.0043",
        "0.29",
        "3.2",
        "1,234.6",
    ]


def test_usage_of_a_thousand_short_tasks(client: Client, user: User, local_backend: Backend) -> None:
    run = create_run(
        owner=user,
        backend=local_backend,
        payload=[{"id": f"t{i}", "name": "T", "command": "true"} for i in range(1056)],
        workflow_name="short",
    )
    Task.objects.filter(run=run).update(
        state="completed", started_at=T0, finished_at=T0 + timedelta(seconds=0.2), elapsed_seconds=0.2
    )
    Run.objects.filter(pk=run.pk).update(status="completed", finished_at=T0)
    client.force_login(user)
    page = client.get(reverse("usage"), {"months": "120"}).content.decode()
    assert ">0.059</div>" in page  # 1,056 x 0.2 s = 211 CPU-seconds


def test_the_admin_sets_run_as_in_a_field_of_its_own(client: Client, staff: User) -> None:
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    form = {
        "name": "here",
        "kind": "local",
        "settings": "{}",
        "max_concurrent": 4,
        "status": "unknown",
        "enabled": "on",
    }
    page = client.get(reverse("admin:backends_backend_add")).content.decode()
    assert 'name="run_as"' in page and "Run tasks as" in page
    refused = client.post(reverse("admin:backends_backend_add"), {**form, "run_as": "root"})
    assert refused.status_code == 200 and "is root (uid 0)" in refused.content.decode()
    added = client.post(reverse("admin:backends_backend_add"), {**form, "run_as": "hut"})
    assert added.status_code == 302, added.content.decode()[:2000]
    backend = Backend.objects.get(name="here")
    assert backend.settings["run_as"] == "hut"
    change = client.get(reverse("admin:backends_backend_change", args=[backend.pk])).content.decode()
    assert 'name="run_as" value="hut"' in change
