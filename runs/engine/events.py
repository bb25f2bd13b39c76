"""The one place that announces committed changes of tasks and runs.

The engine's state helpers (:mod:`runs.engine.states`: ``move``, ``move_all``,
``requeue``), the runs' waiting reasons (:mod:`runs.engine.waiting`), the run status
refresher and the user actions call
:func:`announce`. Nothing is sent for a change that was rolled back: the announcement
waits for the commit (``transaction.on_commit``).

Inside :func:`one_announcement` (the tick of a backend, each user action) the committed
changes are gathered and sent when the block ends, one :class:`RunChange` per run that
carries every task that changed; outside one, each committed call is sent on its own.
Listen with ``run_changed.connect(receiver)``; each receiver gets ``change=RunChange(...)``,
in the thread that committed, so it must be quick: the live push (:mod:`runs.live.push`)
only queues it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from django.db import transaction
from django.dispatch import Signal

run_changed = Signal()


@dataclass(frozen=True)
class RunChange:
    run_id: str
    task_pks: frozenset[int] = field(default_factory=frozenset)  # primary keys (Task.pk) of the tasks that changed
    run_status: bool = False  # the run's own status or times changed

    def merged(self, other: RunChange) -> RunChange:
        """This change and a later one of the same run, as one."""
        return RunChange(self.run_id, self.task_pks | other.task_pks, self.run_status or other.run_status)


class _Gathered(threading.local):
    depth = 0  # how many one_announcement blocks this thread is in
    changes: dict[str, RunChange]


_gathered = _Gathered()


@contextmanager
def one_announcement() -> Iterator[None]:
    """Gather the changes committed inside this block and announce them when it ends, one
    :class:`RunChange` per run (also when it ends with an exception: what was committed
    was committed). Blocks may nest; the outermost one announces."""
    if _gathered.depth == 0:
        _gathered.changes = {}
    _gathered.depth += 1
    try:
        yield
    finally:
        _gathered.depth -= 1
        if _gathered.depth == 0:
            changes, _gathered.changes = _gathered.changes, {}
            _send(changes.values())


def announce(run_ids: Iterable[str], *, task_pks: dict[str, set[int]] | None = None, run_status: bool = False) -> None:
    """Announce, once committed, that these runs changed (and which of their tasks)."""
    task_pks = task_pks or {}
    changes = [
        RunChange(run_id, frozenset(task_pks.get(run_id, ())), run_status)
        for run_id in sorted(set(run_ids) | set(task_pks))
    ]
    if changes:
        transaction.on_commit(partial(_committed, changes))


def announce_tasks(tasks: Iterable[object]) -> None:
    """Announce tasks (model instances with ``pk`` and ``run_id``) whose state was saved."""
    by_run: dict[str, set[int]] = {}
    for task in tasks:
        by_run.setdefault(task.run_id, set()).add(task.pk)  # type: ignore[attr-defined]
    announce(by_run, task_pks=by_run)


def _committed(changes: list[RunChange]) -> None:
    if _gathered.depth == 0:
        _send(changes)
        return
    for change in changes:
        earlier = _gathered.changes.get(change.run_id)
        _gathered.changes[change.run_id] = earlier.merged(change) if earlier else change


def _send(changes: Iterable[RunChange]) -> None:
    for change in changes:
        run_changed.send(sender=RunChange, change=change)
