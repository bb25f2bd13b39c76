"""The server-rendered pages: access rules, content, htmx partials and actions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backends.base import BackendUnavailable, TaskLog
from backends.models import Backend
from runs.actions import create_run
from runs.demo import ensure_demo_setup
from runs.models import ApiToken, ObservedJob, Run, Task, TaskQuerySet, Workflow
from runs.web.pages import GROUP_ROWS
from tests.conftest import LOCAL_USERS, local_user

HTMX = {"HX-Request": "true"}
JSON = {"Accept": "application/json"}

CHAIN = [
    {"id": "prep.data", "name": "Prepare", "command": "echo prep"},
    {"id": "sim.1", "name": "Sim 1", "command": "echo one", "deps": ["prep.*"]},
    {"id": "sim.2", "name": "Sim 2", "command": "echo two", "deps": ["prep.*"], "retries": 2},
    {"id": "final", "name": "Final", "command": "echo done", "deps": ["sim.*"]},
]


def share_demo() -> Workflow:
    """The built-in demo, its local backend shared with the test users (staff only by default)."""
    workflow = ensure_demo_setup()
    workflow.backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    return workflow


@pytest.fixture
def other(db: None) -> User:
    return local_user("bob", "pw-bob-123")


@pytest.fixture
def alice_client(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def run(user: User, local_backend: Backend) -> Run:
    """A pending run nobody ticks (no ticker runs in these tests)."""
    return create_run(owner=user, backend=local_backend, payload=CHAIN, workflow_name="chain")


def _text(response: Any) -> str:
    return response.content.decode()


def _pages(run: Run) -> list[str]:
    return [
        reverse("dashboard"),
        reverse("jobs"),
        reverse("run_list"),
        reverse("run_detail", args=[run.pk]),
        reverse("run_items", args=[run.pk]),
        reverse("task_script", args=[run.pk, "sim.1"]),
        reverse("task_logs", args=[run.pk, "sim.1", "output"]),
        reverse("workflow_list"),
    ]


# -- access ---------------------------------------------------------------------------


def test_every_page_renders_for_a_logged_in_user(alice_client: Client, run: Run) -> None:
    """Each page, with its own title (None: an htmx part, no document) and what it is about."""
    ensure_demo_setup()
    task_ids = ["prep.data", "sim.1", "sim.2", "final"]  # CHAIN's
    expected: dict[str, tuple[str | None, list[str]]] = {
        reverse("dashboard"): ("Jobs · ScriptHut", ["Recent runs", ">chain<"]),
        reverse("jobs"): (None, ["Recent runs", ">chain<"]),
        reverse("run_list"): ("Runs · ScriptHut", [f'href="/runs/{run.pk}"', ">chain<"]),
        reverse("run_detail", args=[run.pk]): (f"chain · run {run.pk} · ScriptHut", task_ids),
        reverse("run_items", args=[run.pk]): (None, task_ids),
        reverse("task_script", args=[run.pk, "sim.1"]): (
            f"sim.1 script · run {run.pk} · ScriptHut",
            ["Submission script", "echo one"],
        ),
        reverse("task_logs", args=[run.pk, "sim.1", "output"]): (f"sim.1 output · run {run.pk} · ScriptHut", ["Sim 1"]),
        reverse("workflow_list"): ("Workflows · ScriptHut", ['action="/workflows/demo/dry-run"']),
        reverse("workflow_dry_run", args=["demo"]): ("Dry run of demo · ScriptHut", ["Dry run: demo"]),
    }
    assert set(expected) >= set(_pages(run))
    for url, (title, contents) in expected.items():
        response = alice_client.get(url)
        assert response.status_code == 200, url
        page = _text(response)
        found = re.search(r"<title>(.*?)</title>", page, re.S)
        assert (found.group(1).strip() if found else None) == title, url
        for text in contents:
            assert text in page, (url, text)


def test_login_is_required(client: Client, run: Run) -> None:
    for url in _pages(run):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url
    for name in ("run_cancel", "run_relaunch"):
        response = client.post(reverse(name, args=[run.pk]))
        assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.PENDING


def test_login_form_and_logout(client: Client, user: User) -> None:
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in _text(page) and 'name="password"' in _text(page)
    bad = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert "didn't match" in _text(bad)
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    dashboard = client.get(reverse("dashboard"))
    assert "alice" in _text(dashboard) and reverse("logout") in _text(dashboard)
    client.post(reverse("logout"))
    assert client.get(reverse("dashboard")).status_code == 302


def test_another_users_run_is_404_unless_staff(client: Client, run: Run, other: User, staff: User) -> None:
    client.force_login(other)
    urls = [u for u in _pages(run) if str(run.pk) in u]
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("run_cancel", args=[run.pk])).status_code == 404
    assert run.pk not in _text(client.get(reverse("run_list")))

    client.force_login(staff)
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert run.pk in _text(client.get(reverse("run_list")))


def test_nav_shows_admin_only_to_staff(client: Client, user: User, staff: User) -> None:
    client.force_login(user)
    page = _text(client.get(reverse("run_list")))
    assert "/sources" in page and reverse("admin:index") not in page
    client.force_login(staff)
    assert reverse("admin:index") in _text(client.get(reverse("run_list")))


# -- runs -----------------------------------------------------------------------------


def test_run_page_shows_groups_counts_and_progress(alice_client: Client, run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(error="generated tasks rejected", warnings=["unknown environment 'gpu'"])
    page = _text(alice_client.get(reverse("run_detail", args=[run.pk])))
    assert "chain" in page and "alice" in page and "local" in page
    for group in ("prep", "sim", "(no group)"):
        assert f">{group}</span>" in page
    assert "4 pending" in page
    assert 'class="seg seg-pending" data-width="100.000"' in page
    assert "alert error" in page and "generated tasks rejected" in page
    assert "alert warning" in page and "unknown environment" in page
    assert "try 1/3" in page  # sim.2 has retries
    assert "Cancel run" in page and "Relaunch" not in page


def test_run_list_counts_and_owner_filter(alice_client: Client, run: Run, other: User, local_backend: Backend) -> None:
    theirs = create_run(owner=other, backend=local_backend, payload=CHAIN, workflow_name="theirs")
    Task.objects.filter(run=run, task_id="prep.data").update(state=Task.State.COMPLETED)
    Task.objects.filter(run=run, task_id="sim.1").update(state=Task.State.RUNNING)
    page = _text(alice_client.get(reverse("run_list")))
    assert run.pk in page and theirs.pk not in page
    assert "1 completed" in page and "1 running" in page and "2 pending" in page
    assert "1/4" in page
    assert "seg-completed" in page and "seg-running" in page


def test_run_page_its_partial_and_the_api_report_the_same_counts(
    alice_client: Client, user: User, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    Task.objects.filter(run=run, task_id="prep.data").update(state=Task.State.COMPLETED)
    Task.objects.filter(run=run, task_id="sim.1").update(state=Task.State.FAILED)
    counted: list[list[str]] = []

    def spy(tasks: TaskQuerySet, run_ids: Any) -> dict[str, dict[str, int]]:
        counted.append(list(run_ids))
        return real(tasks, counted[-1])

    real = TaskQuerySet.state_counts
    monkeypatch.setattr(TaskQuerySet, "state_counts", spy)
    full = alice_client.get(reverse("run_detail", args=[run.pk]))
    partial = alice_client.get(reverse("run_items", args=[run.pk]), headers=HTMX)
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    (listed,) = api.get("/api/runs").json()["items"]

    expected = {state: 0 for state in Task.State.values} | {"completed": 1, "failed": 1, "pending": 2}
    assert full.context["counts"] == partial.context["counts"] == listed["counts"] == expected
    assert counted == [[run.pk]] * 3  # all three asked the one function
    for response in (full, partial):
        assert "1 completed" in _text(response) and "1 failed" in _text(response) and "2 pending" in _text(response)


def test_cancel_and_relaunch(alice_client: Client, run: Run) -> None:
    response = alice_client.post(reverse("run_cancel", args=[run.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("run_detail", args=[run.pk])
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert set(run.tasks.values_list("state", flat=True)) == {Task.State.CANCELLED}
    page = _text(response)
    assert "cancelled" in page and "Relaunch failed" in page and "Cancel run" not in page

    again = alice_client.post(reverse("run_cancel", args=[run.pk]), follow=True)
    assert "already finished" in _text(again) and "alert error" in _text(again)

    response = alice_client.post(reverse("run_relaunch", args=[run.pk]), follow=True)
    assert "Relaunched 4 tasks" in _text(response)
    run.refresh_from_db()
    assert run.status == Run.Status.PENDING
    assert set(run.tasks.values_list("state", flat=True)) == {Task.State.PENDING}

    refused = alice_client.post(reverse("run_relaunch", args=[run.pk]), follow=True)
    assert "still pending" in _text(refused) and "alert error" in _text(refused)
    assert alice_client.get(reverse("run_cancel", args=[run.pk])).status_code == 405


def test_htmx_partials_are_fragments_and_stop_polling_when_finished(alice_client: Client, run: Run) -> None:
    items = _text(alice_client.get(reverse("run_items", args=[run.pk]), headers=HTMX))
    assert "<html" not in items and 'id="run-items"' in items
    # Pushed over the websocket; fetched again only while it is down (scripthut.js), never on a timer.
    assert f'data-poll-url="/runs/{run.pk}/items"' in items and "hx-trigger" not in items

    jobs = _text(alice_client.get(reverse("jobs"), headers=HTMX))
    assert "<html" not in jobs and 'hx-trigger="every 15s"' in jobs

    runs_partial = alice_client.get(reverse("run_list"), headers=HTMX)
    assert "<html" not in _text(runs_partial) and 'data-poll-url="/runs"' in _text(runs_partial)
    assert "HX-Request" in runs_partial["Vary"]
    assert "<html" in _text(alice_client.get(reverse("run_list")))

    Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED, finished_at=timezone.now())
    Task.objects.filter(run=run).update(state=Task.State.COMPLETED)
    items = _text(alice_client.get(reverse("run_items", args=[run.pk]), headers=HTMX))
    assert "data-poll-url" not in items and "hx-get" not in items
    assert "4 completed" in items
    assert "data-poll-url" not in _text(alice_client.get(reverse("run_list"), headers=HTMX))


def test_large_run_page_starts_collapsed_and_pages_each_group(
    alice_client: Client, user: User, local_backend: Backend, django_assert_max_num_queries: Any
) -> None:
    payload: list[dict[str, Any]] = [{"id": "setup", "name": "setup", "command": "true"}]
    payload += [{"id": f"sim.{i}", "name": f"s{i}", "command": "true", "deps": ["setup"]} for i in range(9000)]
    payload += [{"id": f"post.{i}", "name": f"p{i}", "command": "true"} for i in range(999)]
    big = create_run(owner=user, backend=local_backend, payload=payload, workflow_name="big")
    Task.objects.filter(run=big, task_id="sim.8999").update(state=Task.State.FAILED, reason="exit 1")
    url = reverse("run_detail", args=[big.pk])
    with django_assert_max_num_queries(12):
        response = alice_client.get(url)
    page = _text(response)
    # Closed groups with their counts, no task rows: the page stays small (bench/live_bench.py times it).
    assert response.status_code == 200 and len(response.content) < 300_000
    details = re.findall(r'<details class="group"[^>]*>', page)
    assert len(details) == 3 and not any(" open" in tag for tag in details)
    assert page.count('<tr id="task-') == 0
    assert "9000 tasks" in page and "999 tasks" in page and "9999 pending" in page and "1 failed" in page
    assert 'hx-trigger="toggle once"' in page

    group_url = reverse("run_group", args=[big.pk])
    first = _text(alice_client.get(group_url, {"group": "sim"}, headers=HTMX))
    assert first.count('<tr id="task-') == GROUP_ROWS and ">sim.0</td>" in first and ">sim.100</td>" not in first
    assert "rows 1–100 of 9000" in first and "data-complete" not in first
    third = _text(alice_client.get(group_url, {"group": "sim", "page": "3"}, headers=HTMX))
    assert ">sim.200</td>" in third and ">sim.199</td>" not in third and "page 3 of 90" in third
    whole = _text(alice_client.get(group_url, {"group": ""}, headers=HTMX))
    assert whole.count('<tr id="task-') == 1 and "data-complete" in whole  # one page: new rows may be appended
    assert alice_client.get(group_url, {"group": "nope"}).status_code == 404
    assert alice_client.get(group_url).status_code == 400

    focused = _text(alice_client.get(url, {"group": "sim", "page": "3"}))
    assert "sim.1000" in focused and "sim.999<" not in focused and "page 3 of 18" in focused
    assert alice_client.get(url, {"group": "nope"}).status_code == 404


def test_task_ids_with_dots_and_slashes(alice_client: Client, user: User, local_backend: Backend) -> None:
    odd = create_run(
        owner=user,
        backend=local_backend,
        workflow_name="odd",
        payload=[{"id": "a/b.c d", "name": "odd", "command": "true"}],
    )
    url = reverse("task_script", args=[odd.pk, "a/b.c d"])
    response = alice_client.get(url)
    assert response.status_code == 200 and "a/b.c d" in _text(response)
    logs = reverse("task_logs", args=[odd.pk, "a/b.c d", "error"])
    assert alice_client.get(logs).status_code == 200
    assert alice_client.get(reverse("task_script", args=[odd.pk, "missing"])).status_code == 404


def _finish(run: Run, task_id: str, **fields: Any) -> None:
    now = timezone.now()
    defaults: dict[str, Any] = {
        "state": Task.State.COMPLETED,
        "job_id": f"9{len(task_id)}",
        "exit_code": 0,
        "node": "node-7",
        "submitted_at": now,
        "started_at": now,
        "finished_at": now,
        "elapsed_seconds": 600,
    }
    Task.objects.filter(run=run, task_id=task_id).update(**(defaults | fields))


def test_run_rows_show_wait_efficiency_and_pending_reasons(
    alice_client: Client, run: Run, django_assert_max_num_queries: Any
) -> None:
    # Asked for 4 CPUs and 4G, used 10% of the CPUs and 100 MB: red.
    _finish(run, "prep.data", cpu_efficiency=0.1, max_rss_mb=100, memory="4G", cpus=4, queue_wait_seconds=75)
    # Busy CPUs and most of the memory: fine.
    _finish(run, "sim.1", cpu_efficiency=0.93, max_rss_mb=3000, memory="4G", queue_wait_seconds=5)
    Task.objects.filter(run=run, task_id="sim.2").update(
        state=Task.State.SUBMITTED, job_id="1002", reason="Priority", submitted_at=timezone.now()
    )
    Task.objects.filter(run=run, task_id="final").update(
        state=Task.State.SUBMITTED,
        job_id="1003",
        reason="Dependency",
        native_deps=True,
        submitted_at=timezone.now(),
    )
    with django_assert_max_num_queries(8):  # the new columns are in the one rows query: no N+1
        page = _text(alice_client.get(reverse("run_detail", args=[run.pk])))

    assert ">Wait</th>" in page and ">Efficiency</th>" in page
    assert 'class="eff eff-low"' in page and 'class="eff eff-ok"' in page
    assert page.count('class="eff eff-low"') == 1
    assert '<span class="eff-why">CPU 10%</span>' in page and '<span class="eff-why">mem 0.1/4 GB</span>' in page
    assert "CPU 93%" in page and "mem 2.9/4 GB" in page
    assert ">1m 15s</td>" in page and ">5s</td>" in page  # queue waits
    assert '<span class="badge pending-reason">Priority</span>' in page
    assert '<span class="badge pending-reason">Dependency</span>' in page
    assert page.count("held: afterok") == 1


def test_efficiency_is_red_when_out_of_memory_and_empty_when_unknown(alice_client: Client, run: Run) -> None:
    # A failed OOM task that used all its CPU is still red: the backend says it ran out of memory.
    _finish(
        run,
        "prep.data",
        state=Task.State.FAILED,
        exit_code=137,
        cpu_efficiency=0.9,
        max_rss_mb=4096,
        memory="4G",
        reason="out of memory (OUT_OF_MEMORY)",
        out_of_memory=True,
    )
    # The local backend measures nothing: the cell stays empty.
    _finish(run, "sim.1")
    _finish(run, "sim.2", cpu_efficiency=0.8, max_rss_mb=300, memory="512M")
    page = _text(alice_client.get(reverse("run_items", args=[run.pk]), headers=HTMX))
    assert page.count('class="eff eff-low"') == 1 and '<span class="eff-why">mem 4/4 GB</span>' in page
    assert page.count('<td class="eff"></td>') == 2  # sim.1 (not measured) and final (pending)
    assert "<span>CPU 80%</span> · <span>mem 300/512 MB</span>" in page


def test_efficiency_filters() -> None:
    from runs.web.templatetags.scripthut import disk_size, efficiency_class, mem_gb

    def task(**fields: Any) -> Task:
        return Task(**({"state": Task.State.COMPLETED, "memory": "4G"} | fields))

    assert mem_gb(100) == "0.1" and mem_gb(4096) == "4" and mem_gb(3584) == "3.5" and mem_gb(None) == ""
    assert efficiency_class(task(cpu_efficiency=0.1)) == "eff-low"
    assert efficiency_class(task(cpu_efficiency=0.9, max_rss_mb=100)) == "eff-low"  # 100 MB of 4 GB
    assert efficiency_class(task(cpu_efficiency=0.9, max_rss_mb=2048)) == "eff-ok"
    assert efficiency_class(task(state=Task.State.FAILED, reason="OUT_OF_MEMORY", out_of_memory=True)) == "eff-low"
    assert efficiency_class(task(cpu_efficiency=0.9, memory="lots", max_rss_mb=1)) == "eff-ok"  # request unknown
    assert efficiency_class(task()) == ""  # not measured (local backend)
    assert efficiency_class(task(state=Task.State.RUNNING, cpu_efficiency=0.1)) == ""  # not finished
    assert disk_size(12.5) == "12.5 MB" and disk_size(1843.2) == "1.8 GB" and disk_size(None) == ""


def test_task_page_details_panel(alice_client: Client, run: Run) -> None:
    _finish(
        run,
        "sim.1",
        cpu_efficiency=0.12,
        max_rss_mb=300,
        memory="4G",
        cpus=2,
        queue_wait_seconds=3723,
        node="cn042",
        job_id="4242",
        native_deps=True,
    )
    page = _text(alice_client.get(reverse("task_script", args=[run.pk, "sim.1"])))
    assert "<h2>Execution</h2>" in page
    assert "cn042" in page and "4242" in page and "1h 02m" in page and "10m 00s" in page
    assert '<div class="use eff-low"' in page and "<strong>12%</strong>" in page and "of 2 CPUs" in page
    assert "<strong>0.3 GB</strong>" in page and "of 4 GB requested (7%)" in page
    assert "held it until they completed (afterok)" in page
    assert "request fewer" in page and "request less" in page

    Task.objects.filter(run=run, task_id="sim.2").update(
        state=Task.State.SUBMITTED, job_id="77", reason="Resources", submitted_at=timezone.now()
    )
    queued = _text(alice_client.get(reverse("task_script", args=[run.pk, "sim.2"])))
    assert "Pending reason" in queued and '<span class="badge pending-reason">Resources</span>' in queued
    assert "eff-low" not in queued and "known once finished" in queued


# -- tasks: script and logs on a real local run -----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_script_and_logs_of_a_finished_local_task(
    client: Client, user: User, local_backend: Backend, run_to_end: Callable[..., Run]
) -> None:
    client.force_login(user)
    tasks = [
        {
            "id": "say.hello",
            "name": "Hello",
            "command": "echo hello-from-task; echo oops-on-stderr >&2",
            "env_vars": {"GREETING": "hi"},
        },
        {"id": "never", "name": "Never", "command": "false"},
        {"id": "after", "name": "After", "command": "true", "deps": ["never"]},
    ]
    finished = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="logs"))
    assert finished.status == Run.Status.FAILED

    script = _text(client.get(reverse("task_script", args=[finished.pk, "say.hello"])))
    task = finished.tasks.get(task_id="say.hello")
    assert task.script and '<pre class="code">' in script
    assert "echo hello-from-task" in script and "GREETING" in script
    assert ".out" in script or task.output_file in script

    output = client.get(reverse("task_logs", args=[finished.pk, "say.hello", "output"]))
    assert output.status_code == 200 and "hello-from-task" in _text(output)
    assert "hx-trigger" not in _text(output)  # finished: nothing to follow
    error = _text(client.get(reverse("task_logs", args=[finished.pk, "say.hello", "error"])))
    assert "oops-on-stderr" in error
    assert client.get(reverse("task_logs", args=[finished.pk, "say.hello", "stdout"])).status_code == 404

    # A dep_failed task never ran: say so instead of an error.
    never_ran = _text(client.get(reverse("task_logs", args=[finished.pk, "after", "output"])))
    assert "never ran" in never_ran

    page = _text(client.get(reverse("run_detail", args=[finished.pk])))
    assert "1 completed" in page and "1 failed" in page and "1 dep failed" in page
    assert (
        "Relaunch failed" in page and "every 2s" not in page and "every 30s" not in page
    )  # nothing polls once finished


def test_logs_messages_for_unsubmitted_missing_and_unreachable(
    alice_client: Client, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = reverse("task_logs", args=[run.pk, "prep.data", "output"])
    assert "not been submitted yet" in _text(alice_client.get(url))

    # A log outside the run's directory is shown only from a directory the backend allows.
    Backend.objects.filter(pk=run.backend_id).update(settings={"allowed_paths": ["/nonexistent/scripthut"]})
    Task.objects.filter(run=run, task_id="prep.data").update(
        state=Task.State.RUNNING,
        job_id="42",
        output_file="/nonexistent/scripthut/prep.out",
        started_at=timezone.now(),
    )
    page = _text(alice_client.get(url))
    assert "/nonexistent/scripthut/prep.out has not been written yet" in page
    assert 'hx-trigger="every 3s"' in page  # running: the log refreshes
    fragment = _text(alice_client.get(url, headers=HTMX))
    assert "<html" not in fragment and 'id="log"' in fragment

    class UnreachableBackend:
        def log_location(self, log: TaskLog) -> str:
            return log.path

        def read_log(self, log: TaskLog, max_bytes: int = 0) -> str:
            raise BackendUnavailable("ssh: connection refused")

    monkeypatch.setattr("runs.web.views.get_adapter", lambda backend: UnreachableBackend())
    page = _text(alice_client.get(url))
    assert "unreachable" in page and "ssh: connection refused" in page and "alert error" in page


# -- dashboard -----------------------------------------------------------------------


def test_dashboard_lists_our_and_external_jobs_with_user_filter(
    client: Client, user: User, other: User, run: Run, local_backend: Backend
) -> None:
    Task.objects.filter(run=run, task_id="prep.data").update(
        state=Task.State.RUNNING, job_id="job-77", node="node-a", started_at=timezone.now()
    )
    ObservedJob.objects.create(
        backend=local_backend,
        job_id="ext-1",
        name="someone-elses",
        user="dave",
        state="queued",
        reason="Priority",
        partition="gpu",
        cpus=8,
    )
    Backend.objects.filter(pk=local_backend.pk).update(
        status=Backend.Status.UNREACHABLE, status_message="ssh: timed out"
    )
    client.force_login(other)
    page = _text(client.get(reverse("dashboard")))
    assert "job-77" in page and "node-a" in page and "ext-1" in page and "Priority" in page
    assert "ssh: timed out" in page and "bk-unreachable" in page
    assert "<strong>1</strong> / 4 active" in page
    assert '<option value="dave"' in page and '<option value="alice"' in page
    # bob cannot open alice's run, so no link to it.
    assert reverse("run_detail", args=[run.pk]) not in page

    only_dave = _text(client.get(reverse("dashboard"), {"user": "dave"}))
    assert "ext-1" in only_dave and "job-77" not in only_dave
    assert 'hx-get="/jobs?user=dave"' in only_dave
    only_alice = _text(client.get(reverse("jobs"), {"user": "alice"}))
    assert "job-77" in only_alice and "ext-1" not in only_alice

    response = client.post(reverse("filter_toggle"))
    assert response.status_code == 302 and client.session["only_mine"] is True
    mine = _text(client.get(reverse("dashboard")))
    assert "job-77" not in mine and "ext-1" not in mine and 'aria-pressed="true"' in mine
    client.post(reverse("filter_toggle"))
    assert client.session["only_mine"] is False
    assert client.get(reverse("filter_toggle")).status_code == 405


def test_dashboard_backend_cards_show_partitions_disk_and_status(alice_client: Client, local_backend: Backend) -> None:
    now = timezone.now()
    Backend.objects.create(
        name="hpc",
        kind=Backend.Kind.SLURM,
        status=Backend.Status.OK,
        last_polled_at=now,
        cluster_info_at=now,
        cluster_info={
            "partitions": [
                {
                    "partition": "normal",
                    "default": True,
                    "available": "up",
                    "nodes": 3,
                    "state": "mix",
                    "cpus_allocated": 40,
                    "cpus_idle": 23,
                    "cpus_other": 1,
                    "cpus_total": 64,
                },
                {
                    "partition": "gpu",
                    "default": False,
                    "available": "down",
                    "nodes": 1,
                    "state": "down",
                    "cpus_allocated": 0,
                    "cpus_idle": 0,
                    "cpus_other": 8,
                    "cpus_total": 8,
                },
            ],
            "clone_dir": "~/scripthut-repos",
            "clone_dir_mb": 12.5,
        },
    )
    Backend.objects.create(
        name="cluster-b",
        kind=Backend.Kind.SLURM,
        status=Backend.Status.UNREACHABLE,
        last_polled_at=now,
        status_message="connection refused by 127.0.0.1:2222",
        cluster_info={"partitions": [{"partition": "short", "nodes": 1, "cpus_idle": 2, "cpus_total": 2}]},
    )
    page = _text(alice_client.get(reverse("dashboard")))
    assert "<strong>23</strong>/64 idle" in page and "3 nodes" in page
    assert 'class="b-alloc" data-width="62.5"' in page and 'class="b-idle" data-width="35.9"' in page
    assert '>normal<span class="p-def">*</span>' in page
    assert 'class="p-cpus p-down"' in page and "1 node<" in page
    assert "~/scripthut-repos" in page and "12.5 MB" in page
    assert "last checked" in page and "as of" in page
    # Unreachable: the message in red, the last known partitions dimmed.
    assert 'class="bk-msg"' in page and "connection refused by 127.0.0.1:2222" in page
    assert "bk-cluster bk-stale" in page and "<strong>2</strong>/2 idle" in page
    # The local backend has no cluster information: no partitions block for it.
    assert page.count('class="bk-cluster"') == 1 and page.count('class="bk-cluster bk-stale"') == 1


# -- workflows -----------------------------------------------------------------------


def test_workflows_page_and_json_negotiation(alice_client: Client) -> None:
    workflow = share_demo()
    Workflow.objects.create(
        name="gitflow",
        backend=workflow.backend,
        command="python tasks.py",
        git={"repo": "git@example.org:lab/x.git", "branch": "dev", "deploy_key": "~/.ssh/k"},
    )
    html = alice_client.get(reverse("workflow_list"))
    assert html["Content-Type"].startswith("text/html")
    page = _text(html)
    assert "demo" in page and "Dry run" in page and reverse("workflow_run", args=["demo"]) in page
    assert "git@example.org:lab/x.git" in page

    browser = alice_client.get(
        reverse("workflow_list"), headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert browser["Content-Type"].startswith("text/html")

    data = alice_client.get(reverse("workflow_list"), headers=JSON).json()
    by_name = {w["name"]: w for w in data}
    assert set(by_name["demo"]) == {"name", "backend", "command", "max_concurrent", "description", "git"}
    assert by_name["demo"]["backend"] == "local" and by_name["demo"]["max_concurrent"] == 3
    assert by_name["demo"]["git"] is None
    assert by_name["gitflow"]["git"] == {"repo": "git@example.org:lab/x.git", "branch": "dev"}


def test_dry_run_of_demo_lists_its_six_tasks(alice_client: Client) -> None:
    share_demo()
    url = reverse("workflow_dry_run", args=["demo"])
    page = _text(alice_client.post(url))
    for task_id in ("prepare.data", "sim.1", "sim.2", "sim.3", "sim.4", "report.summary"):
        assert f'<td class="mono">{task_id}</td>' in page
    assert "<strong>6</strong> tasks" in page and "Run 6 tasks" in page
    assert "as written: prepare.*" in page  # wildcard deps are shown resolved and as written
    assert Run.objects.count() == 0  # nothing created

    data = alice_client.post(url, headers=JSON).json()
    assert data["count"] == 6 and [t["id"] for t in data["tasks"]][0] == "prepare.data"
    assert data["tasks"][-1]["resolved_deps"] == ["sim.1", "sim.2", "sim.3", "sim.4"]
    assert alice_client.post(reverse("workflow_dry_run", args=["nope"])).status_code == 404


def test_dry_run_of_invalid_json_shows_the_error(alice_client: Client, local_backend: Backend) -> None:
    Workflow.objects.create(name="broken", backend=local_backend, command="echo '{\"tasks\": [oops'")
    url = reverse("workflow_dry_run", args=["broken"])
    page = _text(alice_client.post(url))
    assert "alert error" in page and "invalid workflow JSON" in page
    assert "Run 0" not in page
    response = alice_client.post(url, headers=JSON)
    assert response.status_code == 400 and "invalid workflow JSON" in response.json()["error"]


def test_run_button_starts_a_run(alice_client: Client, user: User) -> None:
    share_demo()
    response = alice_client.post(reverse("workflow_run", args=["demo"]), {"max_concurrent": "2"})
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("run_detail", args=[run.pk])
    assert run.owner == user and run.max_concurrent == 2 and run.tasks.count() == 6

    page = _text(alice_client.get(response["Location"]))
    assert "started" in page and "6 pending" in page

    default = alice_client.post(reverse("workflow_run", args=["demo"]), {"max_concurrent": ""})
    assert default.status_code == 302 and Run.objects.filter(max_concurrent=3).count() == 1
    bad = alice_client.post(reverse("workflow_run", args=["demo"]), {"max_concurrent": "lots"}, follow=True)
    assert "whole number" in _text(bad) and Run.objects.count() == 2


def test_run_button_reports_workflow_errors(alice_client: Client, local_backend: Backend) -> None:
    Workflow.objects.create(name="fails", backend=local_backend, command="echo boom >&2; exit 3")
    response = alice_client.post(reverse("workflow_run", args=["fails"]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("workflow_list")
    page = _text(response)
    assert "alert error" in page and "exited with 3" in page and "boom" in page
    assert Run.objects.count() == 0


def test_workflow_json_is_valid_for_every_configured_workflow(alice_client: Client) -> None:
    ensure_demo_setup()
    raw = alice_client.get(reverse("workflow_list"), headers=JSON).content
    assert isinstance(json.loads(raw), list)
