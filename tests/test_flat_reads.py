"""What a tick, a page and an API call read does not grow with a run's size: the runs'
waiting reasons (kept per run), an opened group's page (read by the database a page at a
time) and a run's cost (sums kept per run by triggers, exact under concurrency)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext

from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import create_run
from runs.costing import estimate
from runs.costing.summary import run_cost
from runs.counts.models import CostSum
from runs.counts.recount import cost_drift
from runs.engine.states import Step, TaskState, move, requeue
from runs.engine.submit import fill_batch
from runs.engine.waiting import shown_reason
from runs.models import ApiToken, Run, Task, task_group
from runs.web.pages import EXPAND_ROWS, GROUP_ROWS, group_page, run_page
from tests.test_cost import configure
from tests.threads import db_thread

pytestmark = pytest.mark.django_db


def t(task_id: str, **extra: object) -> dict[str, object]:
    return {"id": task_id, "name": task_id, "command": "true", **extra}


def sized_run(user: User, backend: Backend, size: int, groups: int = 5) -> Run:
    return create_run(
        owner=user,
        backend=backend,
        payload=[t(f"g{i % groups}.{i}") for i in range(size)],
        workflow_name=f"size-{size}",
        max_concurrent=size,
    )


def queries(read: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        read()
    return [q["sql"] for q in captured.captured_queries]


def reading_tasks(sqls: list[str]) -> list[str]:
    return [sql for sql in sqls if '"runs_task"' in sql or "runs_task " in sql]


# -- waiting reasons: per run, written only when they change ----------------------------------


def _fill_a_full_backend(backend: Backend, size: int, user: User) -> tuple[Run, list[str]]:
    """A run of ``size`` ready tasks on a backend whose one slot another run holds."""
    run = sized_run(user, backend, size)
    return run, queries(lambda: fill_batch(backend, get_adapter(backend), set()))


def test_a_tick_says_why_runs_wait_once_per_run(user: User, local_backend: Backend) -> None:
    local_backend.max_concurrent = 1
    local_backend.save()
    holder = create_run(owner=user, backend=local_backend, payload=[t("hold")], workflow_name="holder")
    Task.objects.filter(run=holder).update(state=TaskState.RUNNING)
    small, at_small = _fill_a_full_backend(local_backend, 40, user)
    Run.objects.filter(pk=small.pk).update(status=Run.Status.COMPLETED)  # out of the next tick's way
    big, at_big = _fill_a_full_backend(local_backend, 4000, user)
    assert len(at_small) == len(at_big)
    # The reason is the run's: no task row is read or written for it.
    assert not [sql for sql in reading_tasks(at_big) if "reason" in sql], reading_tasks(at_big)
    said = "waiting: backend full, 1 of 1 slots in use by 1 user"
    big.refresh_from_db()
    assert big.waiting_reason == said
    # Told again by the next tick: nothing written.
    assert not [
        sql for sql in queries(lambda: fill_batch(local_backend, get_adapter(local_backend), set())) if "UPDATE" in sql
    ]
    # What users see: every waiting task says it, on the page and in the API.
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    rows = api.get(f"/api/runs/{big.pk}?limit=5").json()["tasks"]
    assert {row["reason"] for row in rows} == {said}
    page = Client()
    page.force_login(user)
    assert said in page.get(f"/runs/{big.pk}/group", {"group": "g1"}).content.decode()


def test_a_tasks_shown_reason(user: User, local_backend: Backend) -> None:
    """A ready pending task of a waiting run says why the run waits; a task waiting on its
    dependencies, and any task of a run that does not wait, says its own reason."""
    run = create_run(owner=user, backend=local_backend, payload=[t("a"), t("b"), t("c", deps=["a"])], workflow_name="r")
    a, b = run.tasks.get(task_id="a"), run.tasks.get(task_id="b")
    a.state = TaskState.SUBMITTING
    move([a], Step.CLAIM, ["state"])
    requeue([a], "submission deferred: not sent", Step.SUBMIT)
    shown = {task.task_id: shown_reason(task) for task in run.tasks.all()}
    assert shown == {"a": "submission deferred: not sent", "b": "", "c": ""}
    Run.objects.filter(pk=run.pk).update(waiting_reason="waiting: run limit, 1 of 1 running")
    run.refresh_from_db()
    shown = {task.task_id: shown_reason(task) for task in run.tasks.all()}
    assert shown == {"a": "waiting: run limit, 1 of 1 running", "b": "waiting: run limit, 1 of 1 running", "c": ""}
    assert b.reason == ""  # stored per run, not per task


# -- an opened group: one page read by the database ---------------------------------------------


def test_an_opened_group_reads_one_page_of_its_tasks(user: User, local_backend: Backend) -> None:
    user.is_staff = True
    user.save()
    small, big = (sized_run(user, local_backend, size) for size in (EXPAND_ROWS + 1, 40 * EXPAND_ROWS))
    page = Client()
    page.force_login(user)
    surfaces: dict[str, Callable[[Run], object]] = {
        "group opened on the run page": lambda run: page.get(f"/runs/{run.pk}/group", {"group": "g1", "page": "2"}),
        "group on its own page": lambda run: page.get(f"/runs/{run.pk}", {"group": "g1", "page": "2"}),
        "its live part": lambda run: page.get(f"/runs/{run.pk}/items", {"group": "g1", "page": "2"}),
    }
    for name, read in surfaces.items():
        read(small), read(big)  # warm
        at_small, at_big = queries(lambda: read(small)), queries(lambda: read(big))  # noqa: B023
        assert len(at_small) == len(at_big), name
        assert all("LIMIT" in sql for sql in reading_tasks(at_big)), (name, reading_tasks(at_big))
    # The page's rows are the group's, in workflow order, and its controls move on.
    group = group_page(big, "g1", "2")
    expected = [f"g1.{i}" for i in range(1, 40 * EXPAND_ROWS, 5)][GROUP_ROWS : 2 * GROUP_ROWS]
    assert [task.task_id for task in group.rows] == expected
    assert group.page is not None and group.page.has_next() and group.page.has_previous()
    body = page.get(f"/runs/{big.pk}/group", {"group": "g1", "page": "2"}).content.decode()
    assert "page=3" in body and "page=1" in body


def test_groups_are_the_ids_before_their_last_dot(user: User, local_backend: Backend) -> None:
    ids = ["solo", "sim.1", "Sim.2", "sim.x.3", ".hidden", "trail.", "x.y", "sim.4"]
    run = create_run(owner=user, backend=local_backend, payload=[t(i) for i in ids], workflow_name="names")
    for name in {task_group(i) for i in ids}:
        shown = [task.task_id for task in run_page(run, focus=name).groups[0].rows]
        assert shown == [i for i in ids if task_group(i) == name], name
        assert [task.task_id for task in group_page(run, name, None).rows] == shown


# -- a run's cost: kept per run ----------------------------------------------------------------


def fresh_cost(run: Run) -> tuple[Decimal, Decimal | None, int, int]:
    sums = run.tasks.aggregate(
        total=Sum("cost"), waste=Sum("waste_cost"), costed=Count("cost"), wasted=Count("waste_cost")
    )
    return sums["total"] or Decimal(0), sums["waste"], sums["costed"], sums["wasted"]


def stored_cost(run: Run) -> tuple[Decimal, Decimal | None, int, int]:
    row = CostSum.objects.filter(run=run).first() or CostSum(run=run)
    micro = Decimal("0.000001")
    return row.cost_micro_usd * micro, row.waste_micro_usd * micro if row.wasted else None, row.costed, row.wasted


def assert_cost_kept(run: Run) -> None:
    assert stored_cost(run) == fresh_cost(run)


def test_the_stored_cost_follows_every_change(user: User, local_backend: Backend) -> None:
    run = sized_run(user, local_backend, 30)
    other = sized_run(user, local_backend, 5)
    pks = list(run.tasks.order_by("position").values_list("pk", flat=True))
    Task.objects.filter(pk__in=pks[:10]).update(cost=Decimal("0.123457"), waste_cost=Decimal("0.000001"))
    assert_cost_kept(run)
    Task.objects.filter(pk__in=pks[5:15]).update(cost=Decimal("1.5"))  # some costed again, some first
    assert_cost_kept(run)
    run.tasks.filter(pk__in=pks[:3]).update(state=TaskState.FAILED)
    requeue(list(run.tasks.filter(pk__in=pks[:3])), "again", Step.RELAUNCH)  # clears their cost
    assert_cost_kept(run)
    Task.objects.filter(pk__in=pks[10:12]).update(run=other)  # moved between runs
    Task.objects.filter(pk__in=pks[12:14]).delete()
    assert_cost_kept(run)
    assert_cost_kept(other)
    estimate.recompute(run.tasks.all())  # no pricing: every cost cleared
    assert_cost_kept(run)
    run.delete()
    assert not CostSum.objects.filter(run_id=run.pk).exists()


def test_a_runs_cost_reads_no_task(user: User, local_backend: Backend) -> None:
    configure()
    assert estimate.price_book(update=True) is not None
    small, big = sized_run(user, local_backend, 50), sized_run(user, local_backend, 5000)
    for run in (small, big):
        run.tasks.filter(task_id__startswith="g1.").update(cost=Decimal("0.25"), waste_cost=Decimal("0.05"))
    run_cost(small.pk), run_cost(big.pk)  # warm the price book
    at_small, at_big = queries(lambda: run_cost(small.pk)), queries(lambda: run_cost(big.pk))
    assert len(at_small) == len(at_big)
    assert reading_tasks(at_big) == []
    cost = run_cost(big.pk)
    assert cost is not None
    assert (cost.total, cost.waste, cost.costed, cost.tasks) == (
        Decimal("250.000000"),
        Decimal("50.000000"),
        1000,
        5000,
    )
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    assert api.get(f"/api/runs/{big.pk}?limit=5").json()["cost"]["total_usd"] == 250.0


def test_recount_repairs_cost_sums_that_went_around(user: User, local_backend: Backend) -> None:
    run = sized_run(user, local_backend, 10)
    run.tasks.update(cost=Decimal("0.5"))
    CostSum.objects.filter(run=run).update(cost_micro_usd=1)  # what a partial restore could leave
    assert cost_drift([run.pk])
    with pytest.raises(CommandError, match="1 stored count"):
        call_command("recount", "--check")
    call_command("recount", "--run", run.pk)
    assert cost_drift() == []
    assert_cost_kept(run)


@pytest.mark.django_db(transaction=True)
def test_concurrent_costs_add_up(user: User, local_backend: Backend) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL")
    run = sized_run(user, local_backend, 2000)
    pks = list(run.tasks.values_list("pk", flat=True))
    problems: list[BaseException] = []

    def cost(part: list[int], amount: str) -> None:
        try:
            for i in range(0, len(part), 50):
                Task.objects.filter(pk__in=part[i : i + 50]).update(cost=Decimal(amount), waste_cost=None)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            problems.append(exc)

    # Four writers on overlapping tasks, each costing them differently.
    threads = [db_thread(cost, pks[i % 2 :: 2], f"0.{i + 1}00001") for i in range(4)]
    for thread in threads:
        thread.join()
    assert problems == []
    assert_cost_kept(run)


@pytest.mark.django_db(transaction=True)
def test_migration_0028_sums_the_costs_there_are(user: User, local_backend: Backend) -> None:
    """Upgrading: the costs already stored are added up, and the per-task copies of old
    waiting reasons are dropped (the run's reason is written by the next tick)."""
    run = sized_run(user, local_backend, 6)
    executor = MigrationExecutor(connection)
    executor.migrate([("runs", "0027_task_counts")])
    pks = list(Task.objects.filter(run=run).order_by("position").values_list("pk", flat=True))
    with connection.cursor() as cursor:  # as the previous release stored them
        cursor.execute("UPDATE runs_task SET cost = 0.25, waste_cost = 0.125 WHERE id IN (%s, %s)", pks[:2])
        cursor.execute("UPDATE runs_task SET cost = 1.000001 WHERE id = %s", [pks[2]])
        cursor.execute("UPDATE runs_task SET reason = 'waiting: run limit, 1 of 1 running' WHERE id = %s", [pks[3]])
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert stored_cost(run) == (Decimal("1.500001"), Decimal("0.250000"), 3, 2) == fresh_cost(run)
    assert Task.objects.get(pk=pks[3]).reason == ""
    Task.objects.filter(pk=pks[4]).update(cost=Decimal("2"))  # and the triggers keep them from then on
    assert_cost_kept(run)
