"""The one place that announces committed changes of tasks and runs.

The engine's state helper (:func:`runs.engine.states.move`) and the run status
refresher call :func:`announce`; the announcement is sent after the transaction
commits (``transaction.on_commit``), never for a change that was rolled back. Listen
with ``run_changed.connect(receiver)``; each receiver gets ``change=RunChange(...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from django.apps import apps
from django.db import transaction
from django.dispatch import Signal

run_changed = Signal()


@dataclass(frozen=True)
class RunChange:
    run_id: str
    owner_id: int | None
    task_ids: frozenset[int] = field(default_factory=frozenset)  # Task primary keys that changed state
    run_status: bool = False  # the run's own status or times changed


def announce(run_ids: Iterable[str], *, task_ids: dict[str, set[int]] | None = None, run_status: bool = False) -> None:
    """Announce, once committed, that these runs changed (and which of their tasks)."""
    task_ids = task_ids or {}
    runs = sorted(set(run_ids) | set(task_ids))
    if runs:
        transaction.on_commit(partial(_send, runs, task_ids, run_status))


def announce_tasks(tasks: Iterable[object]) -> None:
    """Announce tasks (model instances with ``pk`` and ``run_id``) whose state was saved."""
    by_run: dict[str, set[int]] = {}
    for task in tasks:
        by_run.setdefault(task.run_id, set()).add(task.pk)  # type: ignore[attr-defined]
    announce(by_run, task_ids=by_run)


def _send(run_ids: list[str], task_ids: dict[str, set[int]], run_status: bool) -> None:
    if not run_changed.has_listeners():
        return  # nobody listens: not even the owner lookup is paid for
    # By name: runs.models imports the engine's states, which import this module.
    run_model = apps.get_model("runs", "Run")
    owners = dict(run_model.objects.filter(pk__in=run_ids).values_list("pk", "owner_id"))
    for run_id in run_ids:
        change = RunChange(run_id, owners.get(run_id), frozenset(task_ids.get(run_id, ())), run_status)
        run_changed.send(sender=RunChange, change=change)
