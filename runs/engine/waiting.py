"""Why a run's ready tasks wait: kept once per run, shown on each of its waiting tasks.

The tick's submit phase decides, per run, why its ready tasks were not submitted
(:func:`runs.engine.fair_share.explain_waiting`: ``waiting: backend full, ...``, a run
limit, a site limit) and a per_user backend's owner without a working identity gets one
too (:func:`runs.engine.owners.hold_pending`). Written as ``Run.waiting_reason``, only
when it changes: a tick costs as much for a 100,000-task run as for a 10-task one.

:func:`shown_reason` is the one place that says what a task's reason is wherever tasks
are shown (the run page's rows, the API, the push, the CLI): a ready pending task of a
run that waits says why the run waits; any other task its own reason (a failure, a
submission the backend deferred, a retry), which stays per task.
"""

from __future__ import annotations

from collections.abc import Mapping

from runs.engine import events
from runs.engine.states import TaskState
from runs.models import Run, Task


def say_why_runs_wait(reasons: Mapping[Run, str]) -> list[str]:
    """Write each run's waiting reason ("": its tasks do not wait) where it differs from
    the one the ``Run`` was read with: one UPDATE per new reason. The runs whose reason
    changed are announced (their pages fetch their rows again); returns their ids."""
    changed: dict[str, list[str]] = {}
    for run, reason in reasons.items():
        if run.waiting_reason != reason:
            changed.setdefault(reason, []).append(run.pk)
            run.waiting_reason = reason
    for reason, run_ids in changed.items():
        Run.objects.filter(pk__in=run_ids).update(waiting_reason=reason)
    said = sorted(run_id for run_ids in changed.values() for run_id in run_ids)
    if said:
        events.announce(said, run_status=True)
    return said


def shown_reason(task: Task) -> str:
    """What ``task`` says about why it is where it is: for a ready pending task of a run
    that waits, why the run waits (newer than what its last attempt left, as a deferred
    submission); otherwise its own reason. ``task.run`` should be loaded with it (tasks
    read through ``run.tasks`` are)."""
    if task.state == TaskState.PENDING and not task.waiting_on and task.run.waiting_reason:
        return task.run.waiting_reason
    return task.reason
