"""Who sees which runs, tasks and jobs: one rule for pages and API alike."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from runs.access import visible_observed_jobs, visible_runs, visible_tasks
from runs.actions import create_run
from runs.models import ApiToken, ObservedJob, Run, Task
from tests.conftest import local_user

CHAIN = [
    {"id": "prep", "name": "Prepare", "command": "true"},
    {"id": "sim.1", "name": "Sim 1", "command": "true", "deps": ["prep"]},
]


@pytest.fixture
def root(db: None) -> User:
    """A superuser who is not staff: an admin account that cannot log in to /admin/."""
    root = local_user("root", "pw-root-1234")
    root.is_superuser = True  # but not staff
    root.save()
    return root


def _run_of(owner: User, backend: Backend) -> Run:
    return create_run(owner=owner, backend=backend, payload=CHAIN, workflow_name=f"{owner.username}-flow")


def test_a_superuser_who_is_not_staff_sees_only_their_own_runs(
    root: User, bob: User, staff: User, local_backend: Backend
) -> None:
    own = _run_of(root, local_backend)
    theirs = _run_of(bob, local_backend)

    api = Client(headers={"Authorization": f"Token {ApiToken.issue(root)}"})
    assert [r["id"] for r in api.get("/api/runs").json()["items"]] == [own.pk]
    assert api.get(f"/api/runs/{theirs.pk}").status_code == 404
    assert api.get(f"/api/runs/{own.pk}").status_code == 200

    pages = Client()
    pages.force_login(root)
    listed = pages.get(reverse("run_list")).content.decode()
    assert own.pk in listed and theirs.pk not in listed
    assert pages.get(reverse("run_detail", args=[theirs.pk])).status_code == 404
    assert pages.get(reverse("task_script", args=[theirs.pk, "prep"])).status_code == 404

    # Staff, superuser or not, see every run on both.
    staff_api = Client(headers={"Authorization": f"Token {ApiToken.issue(staff)}"})
    assert {r["id"] for r in staff_api.get("/api/runs").json()["items"]} == {own.pk, theirs.pk}
    pages.force_login(staff)
    assert pages.get(reverse("run_detail", args=[theirs.pk])).status_code == 200


def test_the_access_module_hides_another_users_run_its_tasks_and_jobs(
    user: User, bob: User, staff: User, local_backend: Backend
) -> None:
    mine = _run_of(user, local_backend)
    theirs = _run_of(bob, local_backend)
    their_task = theirs.tasks.get(task_id="prep")
    ObservedJob.objects.create(
        backend=local_backend, job_id="1", our_task=mine.tasks.get(task_id="prep"), state="running"
    )
    ObservedJob.objects.create(backend=local_backend, job_id="2", our_task=their_task, state="running")
    ObservedJob.objects.create(backend=local_backend, job_id="3", user="dave", state="queued")  # not ScriptHut's

    assert list(visible_runs(user)) == [mine]
    assert set(visible_tasks(user).values_list("run_id", flat=True)) == {mine.pk}
    assert sorted(visible_observed_jobs(user).values_list("job_id", flat=True)) == ["1", "3"]

    assert list(visible_runs(bob)) == [theirs]
    assert sorted(visible_observed_jobs(bob).values_list("job_id", flat=True)) == ["2", "3"]

    assert set(visible_runs(staff)) == {mine, theirs}
    assert visible_tasks(staff).count() == 4
    assert visible_observed_jobs(staff).count() == 3


def test_dashboard_lists_every_live_job_but_names_only_visible_runs(
    client: Client, user: User, bob: User, local_backend: Backend
) -> None:
    theirs = _run_of(bob, local_backend)
    Task.objects.filter(run=theirs, task_id="sim.1").update(state=Task.State.RUNNING, job_id="job-88", node="n9")
    ObservedJob.objects.create(backend=local_backend, job_id="ext-9", user="dave", state="queued")

    client.force_login(user)
    page = client.get(reverse("dashboard")).content.decode()
    # The scheduler shows every job to every user; ScriptHut does not add bob's names to it.
    assert "job-88" in page and "n9" in page and "ext-9" in page and '<option value="bob"' in page
    assert "bob-flow" not in page and ">sim.1<" not in page
    assert reverse("run_detail", args=[theirs.pk]) not in page

    client.force_login(bob)
    page = client.get(reverse("dashboard")).content.decode()
    assert "bob-flow" in page and ">sim.1<" in page and reverse("run_detail", args=[theirs.pk]) in page
