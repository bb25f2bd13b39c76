"""Live push: each committed change of a run (``runs.engine.events.run_changed``) is rendered once
and sent through the channel layer to the pages that show it.

The announcement only queues the change (:func:`on_run_changed`); the rendering happens on the
pusher's own thread (:mod:`runs.live.coalesce`), at most once per run every
:data:`COALESCE_SECONDS`, the changes that came meanwhile merged into one. :func:`flush`
sends what waits at once.

Who gets what is ``runs.access``'s: a change is sent to the run page's group
(``run_page_group``) and to the run's audience (``run_audience``: its owner, the groups it is
shared with, staff), which the runs lists, dashboards and ``/jobs/stream`` of the viewers who
see the run have joined (``viewer_groups``).

The HTML is the page's own partials (task rows, counts, bars, run rows, job rows), marked
``hx-swap-oob`` so htmx's ws extension swaps each in place; ``events`` are the same changes
as data, for Server-Sent Events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import async_to_sync
from celery.signals import worker_process_shutdown
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.template.loader import render_to_string

from runs.access import run_audience, run_page_group
from runs.costing.summary import run_cost
from runs.engine import states
from runs.engine.events import RunChange, run_changed
from runs.engine.sql import chunks
from runs.live.coalesce import EXIT_SECONDS, Coalescer
from runs.models import Run, Task, task_group
from runs.shapes import counts_shape, task_shape
from runs.web.pages import GroupView, RunRow, group_counts, task_rows

# Sockets and streams end after this long, so who may listen is checked again when they
# reconnect (a run no longer shared, a user logged out); pages and EventSource reconnect.
RECHECK_SECONDS = 300.0
MESSAGE_TYPE = "live.push"  # handled by the consumers' live_push method
# Asks the page (scripthut.js) to fetch its live parts once.
REFRESH = '<span id="run-refresh" hidden data-refresh-live hx-swap-oob="true"></span>'
PUSH_ROWS = 500  # a change of more tasks than this sends counts and REFRESH instead of rows


# -- rendering: the pages' own partials -------------------------------------------------


def _changed_tasks(run: Run, task_pks: Iterable[int]) -> list[Task]:
    query = task_rows(run)
    return [task for chunk in chunks(sorted(task_pks)) for task in query.filter(pk__in=chunk)]


def run_page_html(run: Run, tasks: list[Task], counts: dict[str, int]) -> list[str]:
    """What a run page's socket receives: the run's and the changed groups' counts, then the
    changed rows. Two frames: a browser parses a fragment that starts with a ``<tr>`` as table
    rows and drops any ``<tr>`` that follows other elements, so rows travel on their own."""
    cost = run_cost(run.pk)  # None when pricing is off: no cost column, no cost line
    context = {"run": run, "counts": counts, "total": sum(counts.values()), "oob": True, "cost": cost}
    parts = [
        render_to_string("runs/web/_run_summary.html", context),
        render_to_string("runs/web/_run_bars.html", context),
    ]
    if cost:
        parts.append(render_to_string("runs/costing/_run_cost.html", context))
    names = {task_group(task.task_id) for task in tasks}
    for name, group_count in group_counts(run, names).items():
        group = GroupView(name, counts=group_count, total=sum(group_count.values()))
        parts.append(render_to_string("runs/web/_group_summary.html", {"g": group, "oob": True}))
    rows = []
    for task in tasks:
        group_id = GroupView(task_group(task.task_id)).dom_id
        context = {"t": task, "run": run, "group_id": group_id, "oob": True, "cost": cost}
        rows.append(render_to_string("runs/web/_task_row.html", context))
    return ["".join(parts), "".join(rows)]


def run_list_html(run: Run, counts: dict[str, int]) -> str:
    return render_to_string("runs/web/_run_row.html", {"row": RunRow(run, counts), "oob": True})


def jobs_html(run: Run, tasks: list[Task]) -> str:
    """Dashboard rows: a queued or running task's row is replaced or added, a finished one removed."""
    parts: list[str] = []
    for task in tasks:
        task.run = run
        if task.state in states.LIVE:
            parts.append(render_to_string("runs/web/_job_row.html", {"t": task, "openable": True, "oob": True}))
        else:
            parts.append(f'<tr id="job-{task.pk}" hx-swap-oob="delete"></tr>')
    return "".join(parts)


def task_events(run: Run, tasks: list[Task], counts: dict[str, int]) -> list[dict[str, Any]]:
    """The changes as data (``/jobs/stream``): each task's shape as the API gives it, with its
    run, owner, run status and the run's counts (``runs.shapes``); also ``task`` (its id) and ``node``."""
    owner = run.owner.get_username()
    about_run = {"run": run.pk, "owner": owner, "run_status": run.status, "counts": counts_shape(counts)}
    if not tasks:
        return [about_run]
    priced = run_cost(run.pk) is not None
    return [about_run | task_shape(task, priced) | {"task": task.task_id, "node": task.node} for task in tasks]


# -- sending ------------------------------------------------------------------------------


def _listened(layer: BaseChannelLayer, groups: list[str]) -> bool:
    # The in-memory layer (embedded mode) lives in this process: when no page listens, skip
    # the rendering. Another process's listeners (the Redis layer) cannot be seen: always send.
    if isinstance(layer, InMemoryChannelLayer):
        return any(layer.groups.get(group) for group in groups)
    return True


def publish(change: RunChange) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    run = Run.objects.select_related("owner", "backend").filter(pk=change.run_id).first()
    if run is None:
        return
    page_group, audience = run_page_group(run.pk), run_audience(run)
    if not _listened(layer, [page_group, *audience]):
        return
    # A change of very many tasks (a relaunch, a big submit) is sent as counts and a request to
    # fetch the page's live part once: its rows would weigh more than the page itself.
    many = len(change.task_pks) > PUSH_ROWS
    tasks = [] if many else _changed_tasks(run, change.task_pks)
    counts = Task.objects.state_counts([run.pk])[run.pk]
    message_id = uuid.uuid4().hex
    send = async_to_sync(layer.group_send)
    frames = run_page_html(run, tasks, counts)
    if change.run_status or many:  # the actions (cancel, relaunch) hang on the status
        frames[0] += REFRESH
    send(page_group, {"type": MESSAGE_TYPE, "id": message_id, "frames": frames})
    events = task_events(run, tasks, counts)
    if many:
        events[0]["changed_tasks"] = len(change.task_pks)
    viewers = {
        "type": MESSAGE_TYPE,
        "id": message_id,
        "owner": run.owner.get_username(),
        "runs_frames": [run_list_html(run, counts)],
        "jobs_frames": [REFRESH if many else jobs_html(run, tasks)],
        "events": events,
    }
    for group in audience:
        send(group, viewers)


# -- the trigger: queued where it was committed, rendered on the pusher's thread ----------------

COALESCE_SECONDS = 0.25  # a run is rendered at most this often; its changes meanwhile go as one
pusher = Coalescer(publish, COALESCE_SECONDS)


def on_run_changed(sender: object, change: RunChange, **kwargs: object) -> None:
    pusher.add(change)  # no query, no template here: this runs in the tick (or request) that committed


def hand_to(publisher: Callable[[RunChange], None], window: float) -> None:
    """The embedded ticker's own process (:mod:`runs.workers.ticker_process`): hand the merged
    changes to ``publisher``, which passes them to the web server to render and push."""
    global pusher
    pusher = Coalescer(publisher, window)


def flush(timeout: float = 10.0) -> bool:
    """Push every change announced so far now; True once all are sent (tests wait on it)."""
    return pusher.flush(timeout)


def _flush_before_exit(**kwargs: object) -> None:
    pusher.flush(EXIT_SECONDS)


def connect() -> None:
    run_changed.connect(on_run_changed, dispatch_uid="runs.live.push")
    # A Celery prefork child ends with os._exit, which skips the pusher's atexit flush.
    worker_process_shutdown.connect(_flush_before_exit, dispatch_uid="runs.live.push")
