"""Sharing a backend's free slots between users, then between each user's runs.

Each free slot goes to the user with the fewest tasks on the backend (counting the
slots already given this tick), and of that user's runs to the one with the fewest, the
oldest first on a tie; a run never gets more than its own ``max_concurrent`` allows.
So a small run started beside a 10,000-task run gets the next slot that frees, and
three users with ready work get a third of the backend each.

Runs whose ready tasks are left pending for want of a slot say why (``waiting: backend
full, ...`` or ``waiting: run limit, ...``): once per run, ``Run.waiting_reason``
(:mod:`runs.engine.waiting`), never task by task.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from django.db.models import Count, Exists, OuterRef

from backends.models import Backend, ClusterIdentity
from runs.engine.states import ACTIVE, RUN_UNFINISHED, TaskState
from runs.engine.waiting import say_why_runs_wait
from runs.models import Run, Task


@dataclass
class Load:
    """Active tasks on one backend: per run and per owner, counting this tick's claims."""

    by_run: Counter[str] = field(default_factory=Counter)
    by_owner: Counter[int] = field(default_factory=Counter)

    @classmethod
    def of(cls, backend: Backend) -> Load:
        """One query: every active task on the backend, whoever owns it."""
        load = cls()
        rows = Task.objects.on(backend).filter(state__in=ACTIVE).values_list("run_id", "run__owner_id")
        for run_id, owner_id, n in rows.order_by().annotate(n=Count("id")):
            load.add(run_id, owner_id, n)
        return load

    def add(self, run_id: str, owner_id: int, n: int) -> None:
        self.by_run[run_id] += n
        self.by_owner[owner_id] += n

    @property
    def total(self) -> int:
        return sum(self.by_run.values())

    @property
    def users(self) -> int:
        return sum(1 for n in self.by_owner.values() if n > 0)

    def run_room(self, run: Run) -> int:
        return run.max_concurrent - self.by_run[run.pk]


def share(room: int, runs: Iterable[Run], load: Load) -> dict[str, int]:
    """How many of ``room`` free slots each run gets (run id -> slots; runs given none left out)."""
    given: Counter[str] = Counter()
    owners: dict[int, list[tuple[int, float, str, Run]]] = {}
    for run in runs:
        if load.run_room(run) > 0:
            owners.setdefault(run.owner_id, []).append((load.by_run[run.pk], run.created_at.timestamp(), run.pk, run))
    queue = []
    for owner_id, owned in owners.items():
        heapq.heapify(owned)
        queue.append((load.by_owner[owner_id], owned[0][1], owner_id))
    heapq.heapify(queue)
    while room > 0 and queue:
        owner_load, oldest, owner_id = heapq.heappop(queue)
        owned = owners[owner_id]
        run_load, created, run_id, run = heapq.heappop(owned)
        given[run_id] += 1
        room -= 1
        if load.run_room(run) - given[run_id] > 0:
            heapq.heappush(owned, (run_load + 1, created, run_id, run))
        if owned:
            heapq.heappush(queue, (owner_load + 1, owned[0][1], owner_id))
    return dict(given)


def owner_room(backend: Backend, owner: int, runs: Sequence[Run], room: int, load: Load) -> int:
    """On a per_user backend, whose tick works for one owner at a time: the part of the
    ``room`` free slots that sharing gives ``owner``'s ``runs``, beside the other owners'
    runs that have a ready task and a cluster identity to submit it with."""
    if room <= 0:
        return 0
    ready = Task.objects.filter(run=OuterRef("pk"), state=TaskState.PENDING, waiting_on=0)
    identity = ClusterIdentity.objects.filter(backend=backend, user=OuterRef("owner_id"))
    others = (
        Run.objects.on(backend)
        .filter(status__in=RUN_UNFINISHED)
        .exclude(owner_id=owner)
        .filter(Exists(ready), Exists(identity))
    )
    shares = share(room, [*runs, *others], load)
    return sum(shares.get(run.pk, 0) for run in runs)


def explain_waiting(
    backend: Backend, runs: Iterable[Run], load: Load, backend_full: bool, site: str = "", drained: Collection[str] = ()
) -> None:
    """Say why the ready tasks of these runs wait: their own run's limit, or else a full
    backend, or else the site's limit (``site``: how full); runs in ``drained`` (no ready
    task left) and runs given all they could take do not wait. Per run, not per task."""
    reasons: dict[Run, str] = {}
    for run in runs:
        reason = ""
        if run.pk in drained:
            pass
        elif load.run_room(run) <= 0:
            reason = f"waiting: run limit, {load.by_run[run.pk]} of {run.max_concurrent} running"
        elif backend_full:
            reason = (
                f"waiting: backend full, {load.total} of {backend.max_concurrent} slots in use"
                f" by {load.users} user{'s' if load.users != 1 else ''}"
            )
        elif site:
            reason = f"waiting: site limit, {site}"
        reasons[run] = reason
    say_why_runs_wait(reasons)
