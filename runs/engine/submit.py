"""Tick phase 4: submit ready tasks within each run's and the backend's max_concurrent,
all in one batch (one round trip to a remote backend)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backends.base import BackendAdapter, BackendUnavailable, SubmitLimits, SubmitResult
from backends.models import Backend, Environment
from runs.engine import events
from runs.engine.arrays import form_arrays
from runs.engine.claim import Claimed, claim_held, claim_ready_of
from runs.engine.fair_share import Load, explain_waiting, owner_room, share
from runs.engine.finish import mark_dep_failed
from runs.engine.reconcile import mark_submitted
from runs.engine.states import RUN_UNFINISHED, Step, TaskState, move, requeue
from runs.models import Run, Task


def submit_ready(backend: Backend, adapter: BackendAdapter, changed: set[str], *, owner: int | None = None) -> int:
    """``owner``: only that user's runs (a per_user backend, ``adapter`` acting as them).
    Returns how many jobs were sent to the backend."""
    limits = SubmitLimits()
    batch = fill_batch(backend, adapter, changed, owner=owner, limits=limits)
    if not batch:
        return 0
    batch = form_arrays(batch, adapter, limits.max_array_size)
    # Stamped as the jobs are sent: a backend that starts them at once (local) reports a
    # start before submit returns, which must not come before the submission.
    now = timezone.now()
    try:
        results = adapter.submit([(spec, script) for _, spec, script in batch])
    except BackendUnavailable as exc:
        # The adapter guarantees nothing was submitted: put the tasks back.
        requeue([task for task, _, _ in batch], f"submission deferred: {exc}", Step.SUBMIT)
        raise
    # Anything else that escapes leaves the tasks `submitting` for reconciliation.
    apply_results(batch, results, now)
    started = {task.run_id for task, _, _ in batch}
    if Run.objects.filter(pk__in=started, started_at__isnull=True).update(started_at=now):
        events.announce(started, run_status=True)
    return len(batch)


def fill_batch(
    backend: Backend,
    adapter: BackendAdapter,
    changed: set[str],
    *,
    owner: int | None = None,
    limits: SubmitLimits | None = None,
) -> list[Claimed]:
    """Claim ready tasks, the backend's free slots shared between users and their runs
    (:mod:`~runs.engine.fair_share`; only ``owner``'s runs, if given), within the site's
    limits (``adapter.submit_limits``, copied to ``limits``), and say why the ready tasks
    left over wait.

    Claiming may fail tasks whose script cannot be rendered: every run it looked at is
    added to ``changed``."""
    # The backend's max_concurrent counts every owner's tasks.
    load = Load.of(backend)
    room = backend.max_concurrent - load.total
    runs = list(Run.objects.on(backend, owner).filter(status__in=RUN_UNFINISHED))
    mine = room if owner is None else owner_room(backend, owner, runs, room, load)
    site = site_limits(adapter, limits, asked=mine > 0 and bool(runs))
    site_full, mine = within(site, mine)
    environments: dict[str, Environment] | None = None
    batch: list[Claimed] = []
    drained: set[str] = set()  # runs with no ready task left
    while mine > 0:
        shares = share(mine, [r for r in runs if r.pk not in drained], load)
        if not shares:
            break
        environments = environments if environments is not None else {e.name: e for e in Environment.objects.all()}
        claimed = claim_shares([r for r in runs if r.pk in shares], shares, adapter, environments)
        drained |= count_claims(runs, shares, claimed, load)
        batch += claimed
        room, mine = room - len(claimed), mine - len(claimed)
        changed.update(shares)
    site_limit = site_full and mine <= 0
    reason = site.waiting_reason(len(batch)) if site_limit else ""
    explain_waiting(backend, runs, load, backend_full=room <= 0, site=reason, drained=drained)
    return batch


def within(site: SubmitLimits, room: int) -> tuple[bool, int]:
    """Whether the site's limit is smaller than ``room``, and the room it leaves."""
    if site.room is None or site.room >= room:
        return False, room
    return True, site.room


def site_limits(adapter: BackendAdapter, into: SubmitLimits | None, asked: bool) -> SubmitLimits:
    """The site's limits now (one call to the backend; none unless ``asked``: nothing to
    submit), also copied ``into`` the caller's."""
    limits = adapter.submit_limits() if asked else SubmitLimits()
    if into is not None:
        for name in (f.name for f in fields(limits)):
            setattr(into, name, getattr(limits, name))
    return limits


def count_claims(runs: list[Run], shares: dict[str, int], claimed: list[Claimed], load: Load) -> set[str]:
    """Add the claims to the load; return the runs that had fewer ready tasks than their share."""
    got = Counter(task.run_id for task, _, _ in claimed)
    for run in runs:
        load.add(run.pk, run.owner_id, got[run.pk])
    return {run_id for run_id, n in shares.items() if got[run_id] < n}


def claim_shares(
    runs: list[Run], shares: dict[str, int], adapter: BackendAdapter, environments: dict[str, Environment]
) -> list[Claimed]:
    """Each run's share of ready tasks, in one transaction and one claim statement for all
    the runs; then, on a scheduler that can hold a job until its parents end, tasks whose
    parents are live, for the runs that had fewer ready tasks than their share."""
    with transaction.atomic():
        claimed = claim_ready_of(runs, shares, adapter, environments)
        if not adapter.supports_native_dependencies:
            return claimed
        got = Counter(task.run_id for task, _, _ in claimed)
        for run in runs:
            if got[run.pk] < shares[run.pk]:
                mine = [c for c in claimed if c[0].run_id == run.pk]
                claimed += claim_held(run, shares[run.pk] - got[run.pk], adapter, environments, mine)
        return claimed


def apply_results(batch: Sequence[Claimed], results: Sequence[SubmitResult], now: datetime) -> None:
    """Save what the backend answered, in one transaction (so one announcement): the job
    ids with what the backend said about how it took each job (``warning``; empty: nothing
    to say), the tasks to try again later, the rejected ones."""
    by_tag = {spec.tag: task for task, spec, _ in batch}
    submitted: list[tuple[Task, str]] = []
    later: dict[Task, str] = {}
    rejected: list[Task] = []
    for result in results:
        task = by_tag[result.tag]
        if result.job_id:
            task.warning = result.warning
            submitted.append((task, result.job_id))
        elif task.native_deps and (not result.error or result.parent_gone):
            # Its parent was not submitted, or left the scheduler: submit it normally later.
            later[task] = f"held submission deferred: {result.error or 'a parent was not submitted'}"
        elif result.retry or not result.error:
            # Not sent, or the scheduler cannot take it just now: a pause, not a failure.
            later[task] = f"submission deferred: {result.error or 'not sent'}"
        else:
            task.state, task.reason, task.finished_at = (
                TaskState.FAILED,
                f"rejected by the scheduler: {result.error}",
                now,
            )
            rejected.append(task)
    with transaction.atomic():
        mark_submitted(submitted, now, Step.SUBMIT)
        requeue(list(later), list(later.values()), Step.SUBMIT)
        for task in move(rejected, Step.SUBMIT, ["state", "reason", "finished_at"]):
            mark_dep_failed(task.run_id, [task.task_id])
