"""A run's stored task counts (runs.counts) always equal a fresh count of its tasks, and what
pages, the API and a tick read does not grow with the size of a run."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.models import Backend
from runs.actions import cancel_run, create_run, relaunch_run
from runs.counts.models import TaskCount
from runs.counts.recount import drift, recount
from runs.engine.claim import _first_ready
from runs.engine.generate import append_generated
from runs.engine.run_status import refresh_runs_status
from runs.engine.states import TRANSITIONS, Step, TaskState, move, move_all, requeue
from runs.engine.tick import tick_due_backends
from runs.live.push import run_page_html
from runs.models import ApiToken, Run, Task, task_group
from runs.web.pages import EXPAND_ROWS, group_counts
from runs.workflows.parse import check
from tests.test_flat_reads import assert_cost_kept
from tests.threads import db_thread

# Ids with every shape of group: none, one dot, several, a dot first or last.
IDS = ["solo", "sim.1", "sim.2", "a.b.c", "a.b.d", ".hidden", "trail.", "x.y"]


def recounted(run: Run) -> Counter[tuple[str, str]]:
    """(group, state) -> tasks, counted in Python from the rows, the way runs.models names groups."""
    return Counter((task_group(tid), state) for tid, state in run.tasks.values_list("task_id", "state"))


def stored(run: Run) -> Counter[tuple[str, str]]:
    rows = TaskCount.objects.filter(run=run).exclude(n=0).values_list("task_group", "state", "n")
    return Counter({(group, state): n for group, state, n in rows})


def assert_counted(run: Run) -> None:
    assert stored(run) == recounted(run)
    assert drift([run.pk]) == []
    assert_cost_kept(run)


def t(task_id: str, command: str = "true", **extra: object) -> dict[str, object]:
    return {"id": task_id, "name": task_id, "command": command, **extra}


# -- every move of the state machine, at random ----------------------------------------------

MOVES = sorted((src, dst, step) for (src, dst), steps in TRANSITIONS.items() for step in steps)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["move", "move_all", "requeue", "cost", "append"]), st.sampled_from(MOVES)),
        min_size=1,
        max_size=12,
    ),
    picks=st.lists(st.sets(st.integers(0, len(IDS) - 1), min_size=1), min_size=12, max_size=12),
)
def test_counts_follow_every_move(
    user: User, local_backend: Backend, steps: list[tuple[str, tuple[str, str, Step]]], picks: list[set[int]]
) -> None:
    run = create_run(owner=user, backend=local_backend, payload=[t(i) for i in IDS], workflow_name="moves")
    assert_counted(run)
    for n, ((how, (src, dst, step)), picked) in enumerate(zip(steps, picks, strict=False)):
        tasks = list(run.tasks.order_by("position"))
        chosen = [tasks[i % len(tasks)] for i in picked]
        # Put the chosen tasks in the move's source state (as another actor might have), then move them.
        Task.objects.filter(pk__in=[c.pk for c in chosen]).update(state=src)
        if how == "move":
            for task in chosen:
                task.state = dst
            move(chosen, step, ["state"])
        elif how == "move_all":
            move_all(Task.objects.filter(pk__in=[c.pk for c in chosen]), step, dst, [src])
        elif how == "requeue" and dst == TaskState.PENDING and src != TaskState.PENDING:
            requeue(chosen, "again", step)
        elif how == "cost":  # as a task's end costs it (and a requeue clears it): its run's sum follows
            costs = {"cost": Decimal(f"{n}.{n:06d}"), "waste_cost": None if n % 2 else Decimal("0.5")}
            Task.objects.filter(pk__in=[c.pk for c in chosen]).update(**costs)
        elif how == "append":
            added = check([t(f"gen{n}.{i}") for i in range(3)], existing_ids=[c.task_id for c in tasks]).tasks
            append_generated(chosen[0], added)
        assert_counted(run)


# -- the engine end to end on the real local backend -----------------------------------------


def test_counts_follow_a_real_run(user: User, local_backend: Backend, tmp_path: Path, transactional_db: None) -> None:
    """Submit, poll, finish, retries, dep_failed, generated tasks, cancel and relaunch: after
    every tick and action the counts equal the tasks'."""
    flag = tmp_path / "go"
    local_backend.settings = {**local_backend.settings, "allowed_paths": [str(tmp_path)]}
    local_backend.save()
    (tmp_path / "gen.json").write_text(
        '{"tasks": [{"id": "gen.1", "name": "g", "command": "true"},'
        ' {"id": "gen.2", "name": "g", "command": "exit 2"}]}'
    )
    tasks = [
        t("prep.a"),
        t("sim.1", "exit 3", retries=1),
        t("sim.2", deps=["prep.*"]),
        t("post.x", deps=["sim.*"]),
        t("plan", f"cp {tmp_path}/gen.json {tmp_path}/out.json", generates_source=f"{tmp_path}/out.json"),
        t("slow.s", f"test -e {flag} || sleep 60"),
    ]
    run = create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="counted")

    def tick_until(done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, recounted(run)
            tick_due_backends(force=True)
            assert_counted(run)
            time.sleep(0.1)

    tick_until(lambda: run.tasks.filter(task_id__startswith="gen.", state__in=["completed", "failed"]).count() == 2)
    tick_until(lambda: run.tasks.get(task_id="slow.s").state == TaskState.RUNNING)
    cancel_run(run)
    assert_counted(run)
    tick_until(lambda: Run.objects.get(pk=run.pk).is_settled)
    assert recounted(run)[("post", TaskState.DEP_FAILED)] == 1
    assert recounted(run)[("sim", TaskState.FAILED)] == 1
    flag.touch()
    run.refresh_from_db()
    assert relaunch_run(run) > 0
    assert_counted(run)
    tick_until(lambda: Run.objects.get(pk=run.pk).is_finished)
    assert recounted(run)[("slow", TaskState.COMPLETED)] == 1


# -- exact under concurrency, on PostgreSQL (SQLite has one writer at a time) -----------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_moves_add_up(user: User, local_backend: Backend) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL")
    run = create_run(
        owner=user, backend=local_backend, payload=[t(f"g{i % 4}.{i}") for i in range(2000)], workflow_name="race"
    )
    pks = list(run.tasks.values_list("pk", flat=True))
    problems: list[BaseException] = []

    def claim(part: list[int]) -> None:
        try:
            for i in range(0, len(part), 50):
                move_all(
                    Task.objects.filter(pk__in=part[i : i + 50]), Step.CLAIM, TaskState.SUBMITTING, [TaskState.PENDING]
                )
        except BaseException as exc:  # noqa: BLE001  (reported below)
            problems.append(exc)

    def cancel() -> None:
        try:
            for _ in range(20):
                move_all(run.tasks.all(), Step.CANCEL, TaskState.CANCELLED, [TaskState.PENDING])
        except BaseException as exc:  # noqa: BLE001
            problems.append(exc)

    threads = [db_thread(claim, pks[i::3]) for i in range(3)] + [db_thread(cancel)]
    for thread in threads:
        thread.join()
    assert problems == []
    assert_counted(run)
    assert sum(stored(run).values()) == 2000


# -- a check finds hand edits that went around the state machine; recount repairs them -------


@pytest.mark.django_db
def test_recount_repairs_what_went_around(user: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=[t(i) for i in IDS], workflow_name="repair")
    TaskCount.objects.filter(run=run).update(n=99)  # what a partial restore could leave
    assert drift([run.pk])
    with pytest.raises(CommandError, match="5 stored count"):
        call_command("recount", "--check")
    call_command("recount")
    assert_counted(run)
    recount()
    assert_counted(run)


@pytest.mark.django_db
def test_deleting_a_run_deletes_its_counts(user: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=[t(i) for i in IDS], workflow_name="gone")
    Task.objects.filter(run=run, task_id="solo").delete()
    assert_counted(run)
    run.delete()
    assert not TaskCount.objects.filter(run_id=run.pk).exists()


# -- reads that do not grow with the run ------------------------------------------------------


def _queries(read: Callable[[Run], object], run: Run) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        read(run)
    return [q["sql"] for q in captured.captured_queries]


def _sized_run(user: User, backend: Backend, size: int) -> Run:
    run = create_run(
        owner=user,
        backend=backend,
        payload=[t(f"g{i % 5}.{i}") for i in range(size)],
        workflow_name=f"size-{size}",
        max_concurrent=size,
    )
    # Some tasks in other states, as in a run that goes on.
    chosen = list(run.tasks.order_by("position")[:7])
    for task in chosen:
        task.state = TaskState.CANCELLED
    move(chosen, Step.CANCEL, ["state"])
    return run


@pytest.mark.django_db
def test_pages_api_and_status_read_no_task_of_a_big_run(user: User, local_backend: Backend) -> None:
    user.is_staff = True
    user.save()
    small, big = (_sized_run(user, local_backend, size) for size in (EXPAND_ROWS + 1, 8 * EXPAND_ROWS))
    page = Client()
    page.force_login(user)
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    surfaces: dict[str, Callable[[Run], object]] = {
        "run page": lambda run: page.get(f"/runs/{run.pk}"),
        "run page live part": lambda run: page.get(f"/runs/{run.pk}/items"),
        "runs list": lambda run: page.get("/runs"),
        "API run": lambda run: api.get(f"/api/runs/{run.pk}?limit=50"),
        "API runs": lambda run: api.get("/api/runs"),
        "run status": lambda run: refresh_runs_status([run.pk]),
        "push": lambda run: run_page_html(run, [], Task.objects.state_counts([run.pk])[run.pk]),
        "group counts": lambda run: group_counts(run, ["g1"]),
    }
    for name, read in surfaces.items():
        read(small), read(big)  # warm: sessions, caches, a status that changes once
        at_small, at_big = _queries(read, small), _queries(read, big)
        assert len(at_small) == len(at_big), name
        # No query reads a run's tasks except one page of rows (the API's), which is LIMITed.
        reading_tasks = [sql for sql in at_big if '"runs_task"' in sql or "runs_task " in sql]
        assert all("LIMIT" in sql for sql in reading_tasks), (name, reading_tasks)


@pytest.mark.django_db
def test_a_page_of_a_runs_rows_is_read_through_its_index(user: User, local_backend: Backend) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("plan text of SQLite")
    run = _sized_run(user, local_backend, 50)
    rows = Task.objects.filter(run=run).order_by("position").values("pk")[100:150]
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "task_run_position" in plan and "TEMP B-TREE" not in plan, plan


def _sqlite_steps(sql: str, params: tuple[Any, ...]) -> int:
    """How many SQLite virtual-machine steps a query takes: what it reads, whatever the plan says."""
    connection.ensure_connection()
    raw = connection.connection
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    raw.set_progress_handler(step, 1)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.fetchall()
    finally:
        raw.set_progress_handler(None, 1)
    return steps


@pytest.mark.django_db
def test_a_claim_reads_as_many_tasks_as_it_takes(user: User, local_backend: Backend) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("counts SQLite's steps")
    steps = []
    for size in (40, 1000):
        runs = [_sized_run(user, local_backend, size) for _ in range(2)]
        claimed = Task.objects.filter(pk__in=_first_ready({run.pk: 3 for run in runs})).order_by()
        assert sorted(claimed.values_list("position", flat=True)) == [7, 7, 8, 8, 9, 9]
        steps.append(_sqlite_steps(*claimed.values("pk").query.sql_with_params()))
    # Each run's part walks the ready index in position order and stops at its share.
    assert steps[1] < 1.5 * steps[0], steps
