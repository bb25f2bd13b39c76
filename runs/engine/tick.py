"""The tick: for each backend that is due, under its lease, run the four phases.

1. reconcile (:mod:`~runs.engine.reconcile`): tasks an interrupted submit left ``submitting``;
2. cancel (:mod:`~runs.engine.cancel`): jobs of cancelled runs;
3. poll (:mod:`~runs.engine.poll`): one call for every job of interest;
4. submit (:mod:`~runs.engine.submit`): ready tasks, in one batch.

Then the status of every run that changed is derived again from its tasks, and the
tick's changes are announced, one :class:`~runs.engine.events.RunChange` per run.

A ``per_user`` backend runs the four phases once per owner with work, each for that
owner's runs only and through that owner's own connection (their cluster identity);
the backend's ``max_concurrent`` still counts everyone's tasks.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.db.models import Case, F, Value, When
from django.utils import timezone

from backends.base import BackendAdapter, BackendError, BackendUnavailable
from backends.identity import identity_of, missing_identity
from backends.models import Backend
from backends.registry import get_adapter
from runs.engine import events
from runs.engine.cancel import cancel_requested
from runs.engine.lease import backend_claim, interrupted
from runs.engine.owners import hold_pending, owners_with_work
from runs.engine.poll import poll_jobs
from runs.engine.reconcile import reconcile_submitting
from runs.engine.run_status import refresh_runs_status
from runs.engine.submit import submit_ready
from runs.metrics import ticks
from runs.models import PortalSettings

log = logging.getLogger("runs.engine")

CLUSTER_INFO_EVERY = timedelta(minutes=5)
# A backend whose jobs run at submit (local) submits again in the same tick while slots
# free up, for at most this long (then the tick ends: statuses, cancels, other backends).
AGAIN_FOR_SECONDS = 1.0


def tick_due_backends(*, force: bool = False, also: set[int] | frozenset[int] = frozenset()) -> None:
    """One cycle over every enabled backend that is due (or all, with ``force``), and the
    backends in ``also`` (ids: a job of theirs just ended) even if not due."""
    if force:
        backends = list(Backend.objects.filter(enabled=True))
    else:
        backends = due_backends()
        if also:
            due = {b.pk for b in backends}
            backends += Backend.objects.filter(enabled=True, pk__in=also - due)
    for backend in backends:
        tick_backend(backend)


def due_backends() -> list[Backend]:
    """Enabled backends whose next poll time has come, or whose last tick died."""
    return due_and_dead()[0]


def due_and_dead() -> tuple[list[Backend], set[int]]:
    """The due backends, and which of them are due because their last tick died."""
    now = timezone.now()
    backends = list(Backend.objects.filter(enabled=True))
    died = interrupted(backends)
    return [b for b in backends if b.pk in died or not b.next_poll_at or b.next_poll_at <= now], died


def tick_backend(backend: Backend) -> bool:
    """Claim ``backend`` and run one cycle on it, unless another ticker holds it; True if
    this call ran the cycle."""
    with backend_claim(backend) as held:
        if held:
            cycle(backend)
        return held


def tick_backend_by_id(backend_id: int) -> bool:
    """A Celery worker's tick of one backend (due or woken); False if gone, disabled or held."""
    backend = Backend.objects.filter(pk=backend_id, enabled=True).first()
    return backend is not None and tick_backend(backend)


def queue_due_backends() -> list[int]:
    """Backends due for a tick, each moved to its next poll time as it is queued (a
    conditional UPDATE, so that a second dispatcher does not queue it again)."""
    now = timezone.now()
    queued: list[int] = []
    due, died = due_and_dead()
    for backend in due:
        same = Backend.objects.filter(pk=backend.pk, next_poll_at=backend.next_poll_at)
        values: dict[str, object] = {"next_poll_at": now + timedelta(seconds=poll_interval(backend))}
        if backend.pk in died:
            # Its tick died: that tick's mark is cleared, so that it is queued once.
            same, values["lease_owner"] = same.filter(lease_owner=backend.lease_owner), ""
        if same.update(**values):
            queued.append(backend.pk)
    return queued


def poll_interval(backend: Backend) -> int:
    return backend.poll_interval or PortalSettings.load().poll_interval


def cycle(backend: Backend) -> None:
    """Reconcile, cancel, poll and submit for one backend; the caller holds its lease.
    What the tick changed is announced when it ends, once per run."""
    with events.one_announcement():
        _cycle_and_record_status(backend)


def _cycle_and_record_status(backend: Backend) -> None:
    with ticks.timing_tick(backend.pk) as timer:
        status, message = _cycle_and_record_status_timed(backend)
        timer.failed = bool(message)


def _cycle_and_record_status_timed(backend: Backend) -> tuple[str, str]:
    changed: set[str] = set()
    status: str = Backend.Status.OK
    message = ""
    reached: BackendAdapter | None = None
    markers_only = False
    try:
        if backend.per_user:
            reached = run_phases_per_owner(backend, changed)
        else:
            reached = get_adapter(backend)
            markers_only = ends_only(backend, reached)
            run_phases(backend, reached, changed, ends_only=markers_only)
        if reached is not None:
            refresh_cluster_info(backend, reached)
    except BackendUnavailable as exc:
        # Runs wait; nothing is marked failed because the backend cannot be reached.
        status, message = Backend.Status.UNREACHABLE, str(exc)
        log.warning("backend %s unreachable: %s", backend.name, exc)
    except Exception as exc:
        status, message = backend.status, f"tick failed: {exc}"
        log.exception("tick of backend %s failed", backend.name)
    finally:
        refresh_runs_status(changed)
        now = timezone.now()
        values: dict[str, object] = {"status": status, "status_message": message}
        if not markers_only:
            values["last_polled_at"] = now  # the scheduler's own poll ran
        values["next_poll_at"] = next_tick_at(backend, now, reached)
        Backend.objects.filter(pk=backend.pk).update(**values)
    return status, message


def next_tick_at(backend: Backend, now: datetime, adapter: BackendAdapter | None) -> Case:
    """When the backend is next due: after its interval, unless a tick was asked for since
    ``backend`` was read (``request_tick``: a run started, a job ended; its count went up).
    This tick may have read the database before that request: the backend stays due now.
    (A count, not a time: a request's time may fall just after this tick's ``now``.)"""
    return Case(
        When(tick_requests=backend.tick_requests, then=Value(now + timedelta(seconds=tick_every(backend, adapter)))),
        default=F("next_poll_at"),
    )


def ends_only(backend: Backend, adapter: BackendAdapter) -> bool:
    """True when this tick reads the jobs' end markers only: the adapter has them and the
    scheduler's own poll (every ``poll_interval``) is not due yet."""
    if not adapter.read_ends_every or backend.per_user or backend.last_polled_at is None:
        return False
    return timezone.now() - backend.last_polled_at < timedelta(seconds=poll_interval(backend))


def tick_every(backend: Backend, adapter: BackendAdapter | None) -> float:
    """Seconds to the backend's next tick: its poll interval, or sooner to read end markers."""
    interval = poll_interval(backend)
    every = adapter.read_ends_every if adapter is not None and not backend.per_user else 0
    return min(interval, every) if every else interval


def run_phases(
    backend: Backend, adapter: BackendAdapter, changed: set[str], owner: int | None = None, *, ends_only: bool = False
) -> None:
    """The four phases, for every run on the backend, or for ``owner``'s runs only;
    ``ends_only``: the poll reads the jobs' end markers instead of asking the scheduler."""
    reconcile_submitting(backend, adapter, changed, owner=owner)
    cancel_requested(backend, adapter, changed, owner=owner)
    with ticks.timed("poll"):
        poll_jobs(backend, adapter, changed, owner=owner, ends_only=ends_only)
    deadline = time.monotonic() + AGAIN_FOR_SECONDS
    while True:
        with ticks.timed("submit"):
            submitted = submit_ready(backend, adapter, changed, owner=owner)
        if not (submitted and adapter.starts_jobs_at_submit):
            break
        # Local jobs run as soon as they are submitted: show them running now, not a poll
        # interval later; those that ended already free their slots for another round.
        poll_jobs(backend, adapter, changed, owner=owner)
        if time.monotonic() > deadline:
            break


def run_phases_per_owner(backend: Backend, changed: set[str]) -> BackendAdapter | None:
    """The phases once per owner with work, each as that owner's cluster identity.

    An owner without one, whose login fails, or whose account cannot do its work (a
    BackendError: no home directory, a failing squeue...) only holds up their own
    tasks, which stay pending and say why. Returns an adapter that reached the backend
    (None when no owner had work it could do); raises the last failure when nobody could."""
    reached: BackendAdapter | None = None
    failure: BackendUnavailable | BackendError | None = None
    for owner in owners_with_work(backend):
        identity = identity_of(backend, owner)
        if identity is None:
            hold_pending(backend, owner, missing_identity(backend, owner))
            continue
        try:
            adapter = get_adapter(backend, identity)
            run_phases(backend, adapter, changed, owner)
        except (BackendUnavailable, BackendError) as exc:
            failure = exc
            log.warning("backend %s as %s: %s", backend.name, identity.username, exc)
            hold_pending(backend, owner, f"waiting for {backend.name} as {identity.username}: {exc}")
            continue
        reached = adapter
    if reached is None and failure is not None:
        raise failure
    return reached


def refresh_cluster_info(backend: Backend, adapter: BackendAdapter) -> None:
    """Partitions, idle/total nodes and CPUs, disk usage: not worth a round trip every poll."""
    now = timezone.now()
    if backend.cluster_info_at and now - backend.cluster_info_at < CLUSTER_INFO_EVERY:
        return
    Backend.objects.filter(pk=backend.pk).update(cluster_info=adapter.cluster_info().to_json(), cluster_info_at=now)
