"""Live push against a real uvicorn: who may open which socket, and what each one hears.

A committed task move (``runs.engine.states.move``) is announced by ``runs.engine.events``;
``runs.live.push`` renders it on its own thread (changes of a run within a window merged)
and sends it through the channel layer; the sockets
(``runs.live.consumers``) and ``GET /jobs/stream`` (``runs.live.stream``) pass it on. Refusals are
checked at the handshake: the server answers 403 and no socket opens.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.test.signals import template_rendered
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from backends.models import Backend
from runs.access import run_page_group
from runs.actions import create_run
from runs.engine.generate import append_generated
from runs.engine.states import Step, TaskState, move
from runs.engine.tick import tick_due_backends
from runs.live import push as live
from runs.models import ApiToken, Run, Task
from runs.web.pages import group_dom_id
from runs.workflows.parse import validate
from tests.asgi_server import asgi_server, session_cookie
from tests.conftest import local_user
from tests.test_celery import redis_up

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = 1.0  # seconds a socket that must hear nothing is listened to


@pytest.fixture
def base() -> Iterator[str]:
    with asgi_server() as url:
        yield url


@pytest.fixture
def lab(db: None) -> Group:
    return Group.objects.create(name="lab")


@pytest.fixture
def dave(lab: Group) -> User:
    member = local_user("dave", "pw-dave-12345")
    member.groups.add(lab)
    return member


@pytest.fixture
def run(user: User, local_backend: Backend) -> Run:
    tasks = [{"id": f"sim.{i}", "name": f"s{i}", "command": "true"} for i in range(3)]
    created = create_run(owner=user, backend=local_backend, workflow_name="live", payload=tasks)
    assert live.flush()  # its creation is pushed now, not to the sockets a test opens next
    return created


def _open(base: str, path: str, user: User | None) -> ClientConnection:
    headers = {"Origin": base}
    if user is not None:
        headers["Cookie"] = session_cookie(user)
    return connect(base.replace("http://", "ws://") + path, additional_headers=headers, open_timeout=10)


def _refused(base: str, path: str, user: User | None) -> None:
    with pytest.raises(InvalidStatus) as refusal, _open(base, path, user):
        pass
    assert refusal.value.response.status_code == 403


def _claim(task: Task) -> None:
    task.state = TaskState.SUBMITTING
    with transaction.atomic():
        assert move([task], Step.CLAIM, ["state"])


def _submit(task: Task, job_id: str) -> None:
    task.state, task.job_id = TaskState.SUBMITTED, job_id
    with transaction.atomic():
        assert move([task], Step.SUBMIT, ["state", "job_id"])


def _finish(task: Task) -> None:
    task.state, task.exit_code = TaskState.COMPLETED, 0
    with transaction.atomic():
        assert move([task], Step.POLL, ["state", "exit_code"])


def _until(socket: ClientConnection, text: str) -> str:
    """The first message containing ``text`` (earlier ones are skipped)."""
    for _ in range(20):
        message = socket.recv(timeout=10)
        if text in message:
            return str(message)
    raise AssertionError(f"no message with {text!r}")


def _never_hears(socket: ClientConnection, text: str) -> None:
    """Nothing it receives until it has been quiet for QUIET seconds mentions ``text``."""
    while True:
        try:
            assert text not in socket.recv(timeout=QUIET)
        except TimeoutError:
            return


def _hears_nothing(socket: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        socket.recv(timeout=QUIET)


def test_run_socket_lets_in_owner_group_member_and_staff_only(
    base: str, run: Run, user: User, bob: User, staff: User, dave: User, lab: Group
) -> None:
    path = f"/runs/{run.pk}/live"
    _refused(base, path, bob)  # another user: as the page itself, a 404 for them
    _refused(base, path, dave)  # not shared with dave's group yet
    _refused(base, path, None)
    _refused(base, "/runs/nosuchrun/live", user)
    run.shared_with.add(lab)
    sockets = ExitStack()
    listening = [sockets.enter_context(_open(base, path, someone)) for someone in (user, dave, staff)]
    task = run.tasks.get(task_id="sim.1")
    _claim(task)
    for socket in listening:
        counts, rows = socket.recv(timeout=10), socket.recv(timeout=10)
        # The run's counts, then (a frame of their own: see runs.live.push) the page's own rows, swapped in place by id.
        assert 'id="run-headline" hx-swap-oob="true"' in counts and "1 submitting" in counts
        assert str(rows).lstrip().startswith(f'<tr id="task-{task.pk}" hx-swap-oob="true"') and "st-submitting" in rows
        assert "<tr" not in counts and "sim.0" not in rows  # only the rows that changed travel
    sockets.close()
    assert _client(bob).get(f"/runs/{run.pk}").status_code == 404


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_another_origin_may_not_open_a_socket(base: str, run: Run, user: User) -> None:
    headers = {"Origin": "http://evil.example", "Cookie": session_cookie(user)}
    with (
        pytest.raises(InvalidStatus) as refusal,
        connect(base.replace("http://", "ws://") + f"/runs/{run.pk}/live", additional_headers=headers),
    ):
        pass
    assert refusal.value.response.status_code == 403


def test_runs_list_and_dashboard_hear_only_runs_their_user_may_see(
    base: str, run: Run, user: User, bob: User, staff: User, local_backend: Backend
) -> None:
    sockets = ExitStack()
    alice_list, bob_list, staff_list = (sockets.enter_context(_open(base, "/runs/live", u)) for u in (user, bob, staff))
    alice_jobs = sockets.enter_context(_open(base, "/live", user))
    narrowed = sockets.enter_context(_open(base, "/live?user=bob", staff))  # staff's dashboard, narrowed to bob
    task = run.tasks.get(task_id="sim.0")
    _claim(task)
    assert f'<tr id="job-{task.pk}" hx-swap-oob="delete">' in alice_jobs.recv(timeout=10)  # not on a scheduler
    for socket in (alice_list, staff_list):
        html = socket.recv(timeout=10)
        assert f'<tr id="run-{run.pk}" hx-swap-oob="true" data-prepend-to="#runs"' in html
        assert "1 submitting" in html
    _hears_nothing(bob_list)
    _submit(task, "4242")
    alice_list.recv(timeout=10)
    jobs = alice_jobs.recv(timeout=10)
    assert f'<tr id="job-{task.pk}" hx-swap-oob="true" data-append-to="#our-jobs"' in jobs and "4242" in jobs
    _finish(task)
    assert f'<tr id="job-{task.pk}" hx-swap-oob="delete">' in alice_jobs.recv(timeout=10)
    _hears_nothing(narrowed)

    theirs = create_run(
        owner=bob, backend=local_backend, workflow_name="bobs", payload=[{"id": "x", "name": "x", "command": "true"}]
    )
    assert f'id="run-{theirs.pk}"' in bob_list.recv(timeout=10)  # a new run: a row to add
    _until(staff_list, f'id="run-{theirs.pk}"')  # after alice's submit and finish
    _never_hears(alice_list, theirs.pk)
    sockets.close()


def _stream(base: str, user: User, query: str = "") -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.request("GET", f"/jobs/stream{query}", headers={"Cookie": session_cookie(user)})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.readline() == b"retry: 3000\n"  # the stream is open (and subscribed)
    return connection, response


def _next_event(response: http.client.HTTPResponse) -> tuple[str, dict[str, Any]]:
    kind, data = "", ""
    while True:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and kind:
            return kind, json.loads(data)


def test_jobs_stream_sends_server_sent_events_of_visible_runs_only(
    base: str, run: Run, user: User, bob: User, staff: User, local_backend: Backend
) -> None:
    (_, alice), (bob_connection, bobs), (_, carol) = (
        _stream(base, user),
        _stream(base, bob),
        _stream(base, staff, "?user=alice"),
    )
    theirs = create_run(
        owner=bob, backend=local_backend, workflow_name="bobs", payload=[{"id": "x", "name": "x", "command": "true"}]
    )
    counts = dict.fromkeys(TaskState.values, 0) | {"pending": 1}
    assert _next_event(bobs) == ("run", {"run": theirs.pk, "owner": "bob", "run_status": "pending", "counts": counts})
    task = run.tasks.get(task_id="sim.2")
    _claim(task)
    for stream in (alice, carol):  # carol's stream is narrowed to alice: bob's new run was skipped
        kind, event = _next_event(stream)
        assert kind == "task" and event["run"] == run.pk and event["task"] == "sim.2"
        assert event["state"] == "submitting" and event["owner"] == "alice"
    assert bob_connection.sock is not None
    bob_connection.sock.settimeout(QUIET)
    with pytest.raises(TimeoutError):
        _next_event(bobs)  # alice's task is not bob's business
    anonymous = http.client.HTTPConnection("127.0.0.1", urlsplit(base).port, timeout=10)
    anonymous.request("GET", "/jobs/stream")
    assert anonymous.getresponse().status == 302  # to the login page
    for stream in (alice, bobs, carol):
        stream.close()


def test_a_change_of_very_many_tasks_sends_counts_and_asks_for_one_fetch(
    base: str, run: Run, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "PUSH_ROWS", 2)
    with _open(base, f"/runs/{run.pk}/live", user) as page, _open(base, "/live", user) as jobs:
        tasks = list(run.tasks.all())
        for task in tasks:
            task.state = TaskState.SUBMITTING
        with transaction.atomic():
            move(tasks, Step.CLAIM, ["state"])
        counts = page.recv(timeout=10)
        assert "3 submitting" in counts and "data-refresh-live" in counts and "<tr" not in counts
        _hears_nothing(page)  # no frame of rows
        assert "data-refresh-live" in jobs.recv(timeout=10)


TEST_REDIS = os.environ.get("SCRIPTHUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")
REDIS_LAYER = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [TEST_REDIS]}}


@pytest.mark.services
@pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")
def test_pushes_travel_through_the_redis_layer(run: Run, user: User, bob: User, settings: Any) -> None:
    """Deployment mode's layer (channels_redis): the same sockets and stream, the same refusals.
    (From a separate Celery worker process: bench/live_bench.py push.)"""
    settings.CHANNEL_LAYERS = {"default": REDIS_LAYER}  # channels drops its cached layer on this change
    assert isinstance(get_channel_layer(), RedisChannelLayer)
    with asgi_server() as base:
        _refused(base, f"/runs/{run.pk}/live", bob)
        _, stream = _stream(base, user)
        with _open(base, f"/runs/{run.pk}/live", user) as page:
            task = run.tasks.get(task_id="sim.0")
            _claim(task)
            assert "1 submitting" in page.recv(timeout=10)
            assert f'<tr id="task-{task.pk}"' in page.recv(timeout=10)
        assert _next_event(stream)[1]["task"] == "sim.0"
        stream.close()


def test_a_shared_run_is_seen_by_the_groups_members_but_changed_only_by_owner_and_staff(
    run: Run, user: User, dave: User, lab: Group
) -> None:
    member = _client(dave)
    assert member.get(f"/runs/{run.pk}").status_code == 404
    run.shared_with.add(lab)
    page = member.get(f"/runs/{run.pk}")
    assert page.status_code == 200 and "Cancel run" not in page.content.decode()
    assert "Cancel run" in _client(user).get(f"/runs/{run.pk}").content.decode()
    assert run.pk in member.get("/runs").content.decode()
    assert member.post(f"/runs/{run.pk}/cancel").status_code == 403
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(dave)}"})
    assert [r["id"] for r in api.get("/api/runs").json()["items"]] == [run.pk]
    assert api.post(f"/api/runs/{run.pk}/cancel").status_code == 403
    run.refresh_from_db()
    assert run.status == Run.Status.PENDING
    _client(user).post(f"/runs/{run.pk}/cancel")
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED


def test_generated_tasks_are_pushed_as_new_rows_and_a_refresh(base: str, user: User, local_backend: Backend) -> None:
    gen = create_run(
        owner=user,
        backend=local_backend,
        workflow_name="gen",
        payload=[{"id": "make", "name": "make", "command": "true"}],
    )
    assert live.flush()
    generator = gen.tasks.get()
    with _open(base, f"/runs/{gen.pk}/live", user) as page:
        made = validate([{"id": "sim.1", "name": "s", "command": "true"}], existing_ids=["make"])
        with transaction.atomic():
            append_generated(generator, made)
        counts, rows = page.recv(timeout=10), page.recv(timeout=10)
        assert "2 pending" in counts and "data-refresh-live" in counts  # a new group: the page fetches once
        new = gen.tasks.get(task_id="sim.1")
        assert f'<tr id="task-{new.pk}" hx-swap-oob="true" data-append-to="#{group_dom_id("sim")}-rows"' in rows


def test_sockets_are_checked_again_after_a_while(
    base: str, run: Run, dave: User, lab: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "RECHECK_SECONDS", 1.0)
    run.shared_with.add(lab)
    with _open(base, f"/runs/{run.pk}/live", dave) as socket:
        run.shared_with.remove(lab)  # no longer dave's to follow
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # the page reconnects...
    _refused(base, f"/runs/{run.pk}/live", dave)  # ...and is refused
    _, stream = _stream(base, dave)
    stream.read()  # ends (the client reconnects: EventSource's retry)


# -- rendering happens on the pusher's thread, once per run per window ------------------------


@pytest.fixture
def rendered() -> Iterator[list[tuple[str, str]]]:
    """(template, thread) of every template rendered meanwhile."""
    seen: list[tuple[str, str]] = []

    def record(sender: Any, template: Any, **kwargs: Any) -> None:
        seen.append((template.name, threading.current_thread().name))

    template_rendered.connect(record, weak=False, dispatch_uid="test_live.rendered")
    yield seen
    template_rendered.disconnect(dispatch_uid="test_live.rendered")


@pytest.fixture
def run_page(run: Run) -> Iterator[str]:
    """A channel in the run page's group, as an open page's socket would be (in-memory layer)."""
    layer = get_channel_layer()
    name = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(run_page_group(run.pk), name)
    yield name
    async_to_sync(layer.group_discard)(run_page_group(run.pk), name)


def _pushed(channel: str) -> dict[str, Any]:
    assert live.flush()  # every change announced so far is sent: the message waits in the channel
    return dict(async_to_sync(get_channel_layer().receive)(channel))


def test_the_tick_renders_nothing_the_pusher_renders_its_change(
    run: Run, run_page: str, rendered: list[tuple[str, str]]
) -> None:
    tick_due_backends(force=True)
    frames = _pushed(run_page)["frames"]
    assert all(f'id="task-{task.pk}"' in frames[1] for task in run.tasks.all())  # the tick's one change
    assert rendered and {thread for _, thread in rendered} == {"scripthut-push"}


def test_changes_of_a_run_within_the_window_are_rendered_once(
    run: Run, run_page: str, rendered: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live.pusher, "window", 60.0)  # so the three commits surely fall in one window
    tasks = list(run.tasks.all())
    for task in tasks:
        _claim(task)  # three commits, three announcements
    frames = _pushed(run_page)["frames"]  # flush ends the window at once
    assert [name for name, _ in rendered].count("runs/web/_run_summary.html") == 1
    assert "3 submitting" in frames[0] and all(f'id="task-{task.pk}"' in frames[1] for task in tasks)
