"""API operations on one task: what it is, its script, its logs (a tail, or followed as
Server-Sent Events while it runs) and cancelling it alone.

Task ids are free text: ``{path:task_id}`` takes dots and slashes, and the fixed suffix
after it (``/script``, ``/logs/output``, ``/cancel``) tells the operations apart, so these
are registered before the bare task's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from ninja import Path, Query

from runs.access import visible_task
from runs.actions import cancel_task as cancel_one_task
from runs.api.base import api, caller, error
from runs.api.schemas import TASK_ID_DOC, ErrorOut, LogTail, TaskDetailOut, TaskScriptOut, TaskStateOut
from runs.costing.summary import run_cost
from runs.models import Task
from runs.shapes import task_detail_shape
from runs.web.task_logs import LogRead, log_location, read_log

Stream = Literal["output", "error"]
FOLLOW_POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
TASK_PATH = "/runs/{run_id}/tasks/{path:task_id}"
TEXT: dict[str, Any] = {"content": {"text/plain": {"schema": {"type": "string"}}}}
EVENTS: dict[str, Any] = {
    "description": 'Server-Sent Events: `log` events whose data is JSON `{"text": ...}` (the new part of '
    'the log), `waiting` (`{"message": ...}`: why there is no log yet) and a last `end` (`{"state": ...}`) '
    "once the task has ended and all of its log was sent.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _task_id(description: str = TASK_ID_DOC) -> Any:
    return Path(..., description=description)


def _tail(text: str, lines: int | None) -> str:
    return text if lines is None else "".join(text.splitlines(keepends=True)[-lines:])


def _problem_response(request: HttpRequest, log: LogRead) -> HttpResponse:
    # Unreachable backend or unreadable file: the portal could not get it (502); else the task
    # has none in its state (409: not submitted yet, never ran, not written yet).
    return error(request, 502 if log.level == "error" else 409, log.problem)


@api.get(f"{TASK_PATH}/script", response={200: TaskScriptOut, 401: ErrorOut, 404: ErrorOut}, tags=["tasks"])
def get_task_script(request: HttpRequest, run_id: str, task_id: str = _task_id()) -> dict[str, Any]:
    """The job script of a task as submitted (empty until it is) and where its logs go."""
    task = visible_task(caller(request), run_id, task_id)
    return {
        "run_id": task.run_id,
        "task_id": task.task_id,
        "script": task.script,
        "output_path": log_location(task, "output"),
        "error_path": log_location(task, "error"),
    }


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _new_text(sent: str, text: str) -> str:
    """What ``text`` (a fresh tail of the log) has that ``sent`` (the previous tail) had not."""
    if text.startswith(sent):
        return text[len(sent) :]
    anchor = sent[-1024:]  # the tail window moved on: find where the last one ended
    at = text.rfind(anchor) if anchor else -1
    return text[at + len(anchor) :] if at >= 0 else text


def _follow(task_pk: int, stream: str) -> Iterator[str]:
    """The log of a task as it grows, until the task has ended and every byte was sent."""
    sent, said, quiet_since = "", "", time.monotonic()
    yield "retry: 3000\n: following\n\n"
    while True:
        task = Task.objects.select_related("run__backend").get(pk=task_pk)
        ended = task.is_finished  # read before the log: a log read after the end is complete
        log = read_log(task, stream, log_location(task, stream))
        if not connection.in_atomic_block:
            connection.close()  # each chunk may be read on another worker thread
        if log.problem and log.problem != said and not (ended and sent):
            said = log.problem
            yield _sse("waiting", {"message": log.problem})
            quiet_since = time.monotonic()
        elif not log.problem and (new := _new_text(sent, log.text)):
            sent = log.text
            yield _sse("log", {"text": new})
            quiet_since = time.monotonic()
        if ended:
            yield _sse("end", {"state": task.state})
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        time.sleep(FOLLOW_POLL_SECONDS)


def _stream_response(task: Task, stream: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_follow(task.pk, stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@api.get(
    f"{TASK_PATH}/logs/{{stream}}/follow",
    response={200: str, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut},
    tags=["tasks"],
    openapi_extra={"responses": {200: EVENTS}},
)
def follow_task_log(request: HttpRequest, run_id: str, stream: Stream, task_id: str = _task_id()) -> HttpResponseBase:
    """Follow a task's log (output or error) as Server-Sent Events until the task ends."""
    return _stream_response(visible_task(caller(request), run_id, task_id), stream)


@api.get(
    f"{TASK_PATH}/logs/{{stream}}",
    response={200: str, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, 502: ErrorOut},
    tags=["tasks"],
    openapi_extra={
        "responses": {
            200: {
                "description": "The log's text (its last 256 KiB at most); events when asked (see follow_task_log).",
                "content": TEXT["content"] | EVENTS["content"],
            }
        }
    },
)
def get_task_log(
    request: HttpRequest, run_id: str, stream: Stream, query: Query[LogTail], task_id: str = _task_id()
) -> HttpResponseBase:
    """A task's log (output or error) as text, its last `tail` lines if given; 409 says why there
    is none (not submitted yet, never ran, not written yet), 502 why it could not be read.
    Asked with `Accept: text/event-stream`, it follows the log as follow_task_log does."""
    task = visible_task(caller(request), run_id, task_id)
    if request.headers.get("Accept", "").startswith("text/event-stream"):
        return _stream_response(task, stream)
    log = read_log(task, stream, log_location(task, stream))
    if log.problem:
        return _problem_response(request, log)
    return HttpResponse(_tail(log.text, query.tail), content_type="text/plain; charset=utf-8")


@api.post(
    f"{TASK_PATH}/cancel",
    response={200: TaskStateOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["tasks"],
)
def cancel_task(request: HttpRequest, run_id: str, task_id: str = _task_id()) -> dict[str, Any]:
    """Cancel one task: a pending one at once (the tasks that need it become dep_failed), a
    submitted or running one's job on the next tick. Only the run's owner and staff may."""
    task = visible_task(caller(request), run_id, task_id)
    state = cancel_one_task(task, by=caller(request))
    return {"run_id": task.run_id, "task_id": task.task_id, "state": state}


@api.get(TASK_PATH, response={200: TaskDetailOut, 401: ErrorOut, 404: ErrorOut}, tags=["tasks"])
def get_task(request: HttpRequest, run_id: str, task_id: str = _task_id()) -> dict[str, Any]:
    """One task: its state, what it asked for, its tries, where it ran, its efficiency and cost."""
    task = visible_task(caller(request), run_id, task_id)
    return task_detail_shape(task, priced=run_cost(task.run_id) is not None)
