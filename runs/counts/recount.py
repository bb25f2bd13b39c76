"""Counting a run's tasks, and adding up their costs, from scratch: to check the stored
counts and cost sums, and to repair them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction

from runs.counts import cost_triggers
from runs.counts.models import CostSum, TaskCount
from runs.counts.triggers import group_sql

Key = tuple[str, str, str]  # run id, task group, state
Sums = tuple[int, int, int, int]  # a run's cost and waste (millionths of a dollar), tasks costed, with waste


@dataclass(frozen=True)
class Drift:
    run_id: str
    task_group: str
    state: str
    stored: int
    counted: int


def counted(run_ids: Iterable[str] | None = None) -> dict[Key, tuple[int, int]]:
    """(tasks, smallest position) per run, group and state, counted from the tasks: one
    aggregate query over the tasks of these runs (all runs: None)."""
    ids = None if run_ids is None else list(run_ids)
    where = "" if ids is None else f"WHERE run_id IN ({', '.join(['%s'] * len(ids))})"
    sql = (
        f"SELECT run_id, {group_sql('task_id')} AS grp, state, COUNT(*), MIN(position) "  # noqa: S608
        f"FROM runs_task {where} GROUP BY 1, 2, 3"
    )
    if ids == []:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(sql, ids or [])
        return {(run, grp, state): (n, first) for run, grp, state, n, first in cursor.fetchall()}


def stored(run_ids: Iterable[str] | None = None) -> dict[Key, int]:
    rows = TaskCount.objects.exclude(n=0)
    if run_ids is not None:
        rows = rows.filter(run_id__in=list(run_ids))
    return {(run, grp, state): n for run, grp, state, n in rows.values_list("run_id", "task_group", "state", "n")}


@contextmanager
def tasks_held() -> Iterator[None]:
    """A transaction in which no task changes: on PostgreSQL the task table is locked
    against writers (readers go on) until it ends; SQLite's transactions take its one
    write lock when they begin (``BEGIN IMMEDIATE``)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE runs_task IN SHARE MODE")
        yield


def drift(run_ids: Iterable[str] | None = None) -> list[Drift]:
    """Where the stored counts differ from the tasks (none: they agree)."""
    ids = None if run_ids is None else list(run_ids)
    with tasks_held():
        have, want = stored(ids), counted(ids)
    return [
        Drift(*key, stored=have.get(key, 0), counted=want.get(key, (0, 0))[0])
        for key in sorted(set(have) | set(want))
        if have.get(key, 0) != want.get(key, (0, 0))[0]
    ]


@dataclass(frozen=True)
class CostDrift:
    run_id: str
    stored: Sums
    summed: Sums


def _where(ids: list[str] | None) -> tuple[str, list[str]]:
    return ("", []) if ids is None else (f"run_id IN ({', '.join(['%s'] * len(ids))})", ids)


def summed_costs(run_ids: Iterable[str] | None = None) -> dict[str, Sums]:
    """Each run's cost sums, added up from its tasks (runs with a costed task only)."""
    ids = None if run_ids is None else list(run_ids)
    if ids == []:
        return {}
    where, params = _where(ids)
    # The backfill's own SELECT, without its INSERT.
    sql = cost_triggers.backfill_sql(cost_triggers.integer_type(connection), where)
    with connection.cursor() as cursor:
        cursor.execute(sql[sql.index("SELECT") :], params)
        return {run: (cost, waste, costed, wasted) for run, cost, waste, costed, wasted in cursor.fetchall()}


def stored_costs(run_ids: Iterable[str] | None = None) -> dict[str, Sums]:
    rows = CostSum.objects.exclude(cost_micro_usd=0, waste_micro_usd=0, costed=0, wasted=0)
    if run_ids is not None:
        rows = rows.filter(run_id__in=list(run_ids))
    fields = ("run_id", "cost_micro_usd", "waste_micro_usd", "costed", "wasted")
    return {run: (cost, waste, costed, wasted) for run, cost, waste, costed, wasted in rows.values_list(*fields)}


def cost_drift(run_ids: Iterable[str] | None = None) -> list[CostDrift]:
    """Where the stored cost sums differ from the tasks' costs (none: they agree)."""
    ids = None if run_ids is None else list(run_ids)
    with tasks_held():
        have, want = stored_costs(ids), summed_costs(ids)
    zero = (0, 0, 0, 0)
    return [
        CostDrift(run, have.get(run, zero), want.get(run, zero))
        for run in sorted(set(have) | set(want))
        if have.get(run, zero) != want.get(run, zero)
    ]


def recount(run_ids: Iterable[str] | None = None) -> None:
    """Replace the stored counts and cost sums of these runs (all: None) by a fresh count
    of their tasks, which cannot change meanwhile (:func:`tasks_held`)."""
    ids = None if run_ids is None else list(run_ids)
    with tasks_held():
        costs = CostSum.objects.all() if ids is None else CostSum.objects.filter(run_id__in=ids)
        costs.delete()
        if ids != []:
            where, params = _where(ids)
            with connection.cursor() as cursor:
                cursor.execute(cost_triggers.backfill_sql(cost_triggers.integer_type(connection), where), params)
        old = TaskCount.objects.all() if ids is None else TaskCount.objects.filter(run_id__in=ids)
        old.delete()
        TaskCount.objects.bulk_create(
            [
                TaskCount(run_id=run, task_group=grp, state=state, n=n, first_position=first)
                for (run, grp, state), (n, first) in counted(ids).items()
            ],
            batch_size=2000,
        )
