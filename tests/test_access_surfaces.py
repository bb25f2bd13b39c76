"""Every surface that shows or changes a run agrees with ``runs.access``, for every kind of viewer.

The surfaces are found, not listed: every URL of the URL conf that takes a ``run_id`` (pages,
htmx partials, API operations), every parameterless page (none may name a run its viewer may
not see), every websocket route and every streaming (async) view. A new surface that forgets
to ask ``runs.access`` fails here. Sockets and streams are real, under uvicorn (as in
``tests/test_live.py``).

The viewers, around one run of alice's on the ``local`` backend, shared with the group ``lab``:
staff; the owner; a member of ``lab`` who may not use the run's backend; a colleague who shares
the backend's group but not the run; a stranger in no group at all.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from backends.models import Backend
from runs import access
from runs.actions import create_run
from runs.engine.states import Step, TaskState, move
from runs.live.routing import websocket_urlpatterns
from runs.models import ApiToken, Run, Task
from tests.asgi_server import asgi_server, session_cookie
from tests.conftest import local_user

WORKFLOW = "secret-flow-83c1"  # names the run wherever it is shown
RUNNING, PENDING = "secretstep.1", "secretstep.2"
VIEWERS = ("staff", "owner", "shared", "colleague", "stranger")
# What a URL parameter is filled with; a new kind of parameter must be added here.
PARAMETERS = {"run_id": "{run}", "task_id": RUNNING, "stream": "output"}
LISTINGS = {"run_list", "dashboard", "jobs", "api:list_runs"}  # must show the run to whoever sees it


@dataclass(frozen=True)
class Surface:
    name: str
    route: str  # with <parameters>
    callback: Callable[..., Any]

    @property
    def api(self) -> bool:
        return self.route.startswith("api/")

    def path(self, run: Run) -> str:
        def fill(match: re.Match[str]) -> str:
            parameter = match.group(1).rpartition(":")[2]
            assert parameter in PARAMETERS, f"{self.name}: give <{parameter}> a value in PARAMETERS"
            return PARAMETERS[parameter].format(run=run.pk)

        return "/" + re.sub(r"<([^>]+)>", fill, self.route)


def _walk(patterns: list[URLPattern | URLResolver], prefix: str = "", namespace: str = "") -> Iterator[Surface]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _walk(pattern.url_patterns, route, inner)
        else:
            yield Surface(f"{namespace}{pattern.name or route}", route.lstrip("^").rstrip("$"), pattern.callback)


SURFACES = [s for s in _walk(get_resolver().url_patterns) if not s.route.startswith("admin/")]
STREAMS = [s for s in SURFACES if iscoroutinefunction(s.callback)]  # Server-Sent Events, served by ASGI
RUN_SURFACES = [s for s in SURFACES if "run_id>" in s.route and s not in STREAMS]
PAGES = [s for s in SURFACES if "<" not in s.route and s not in STREAMS]
# The admin manages every model by Django's own permissions (staff only): not a surface of these rules.


def test_the_surfaces_are_found() -> None:
    names = {s.name for s in RUN_SURFACES}
    assert {"run_detail", "run_items", "run_cancel", "task_logs", "api:get_run", "api:relaunch_run"} <= names
    assert LISTINGS <= {s.name for s in PAGES}
    assert "jobs_stream" in {s.name for s in STREAMS}
    assert {"live", "runs/live", "runs/<str:run_id>/live"} <= {str(p.pattern) for p in websocket_urlpatterns}


# -- the scene ---------------------------------------------------------------------------------


@dataclass
class Scene:
    run: Run
    viewers: dict[str, User]


def _scene(local_backend: Backend) -> Scene:
    lab = Group.objects.create(name="lab")
    owner = local_user("alice", "pw-alice-123")
    shared = User.objects.create_user("sam", password="pw-sam-12345")
    shared.groups.add(lab)  # sees the run, but may not use its backend
    viewers = {
        "staff": User.objects.create_user("carol", password="pw-carol-123", is_staff=True),
        "owner": owner,
        "shared": shared,
        "colleague": local_user("bob", "pw-bob-12345"),
        "stranger": User.objects.create_user("sid", password="pw-sid-12345"),
    }
    tasks = [{"id": task_id, "name": task_id, "command": "true"} for task_id in (RUNNING, PENDING)]
    run = create_run(owner=owner, backend=local_backend, payload=tasks, workflow_name=WORKFLOW)
    run.shared_with.add(lab)
    Task.objects.filter(run=run, task_id=RUNNING).update(
        state=TaskState.RUNNING, job_id="job-4711", started_at=timezone.now()
    )
    return Scene(run, viewers)


@pytest.fixture
def scene(local_backend: Backend) -> Scene:
    return _scene(local_backend)


def _client(user: User, api: bool) -> Client:
    if api:
        return Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    client = Client()
    client.force_login(user)
    return client


def _expected(user: User, run: Run, changes: bool) -> str:
    if not access.may_see_run(user, run):
        return "hidden"
    if changes and not access.may_change_run(user, run):
        return "refused"
    return "let in"


def _outcome(status: int) -> str:
    assert status in (200, 302, 403, 404, 409), status  # 409: let in, but the run is not in that state
    return {404: "hidden", 403: "refused"}.get(status, "let in")


# -- pages, partials, API operations -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("surface", RUN_SURFACES, ids=lambda s: s.name)
def test_every_run_surface_agrees_with_the_access_module(scene: Scene, surface: Surface, viewer: str) -> None:
    user, run = scene.viewers[viewer], scene.run
    client = _client(user, surface.api)
    path = surface.path(run)
    response = client.get(path, {"group": "secretstep"})
    changes = response.status_code == 405  # a POST-only operation: cancel, relaunch
    if changes:
        response = client.post(path)
    assert _outcome(response.status_code) == _expected(user, run, changes), response.content[:300]
    if response.streaming:  # a log followed as events: let in is all there is to see (it never ends here)
        response.close()
    elif not changes and response.status_code == 200:
        assert run.pk in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("surface", PAGES, ids=lambda s: s.name)
def test_no_page_names_a_run_its_viewer_may_not_see(scene: Scene, surface: Surface, viewer: str) -> None:
    user, run = scene.viewers[viewer], scene.run
    response = _client(user, surface.api).get(surface.path(run))
    body = response.content.decode(errors="replace")
    sees = access.may_see_run(user, run)
    if not sees:
        for secret in (WORKFLOW, "secretstep", f"/runs/{run.pk}"):
            assert secret not in body, secret
    if surface.name in LISTINGS:
        assert response.status_code == 200
        assert (run.pk in body and WORKFLOW in body) == sees
    if surface.name in ("dashboard", "jobs"):  # the job row, named
        assert (RUNNING in body) == sees
        assert ("job-4711" in body) == (sees or access.usable_backends(user).filter(pk=run.backend_id).exists())


# -- websockets and Server-Sent Events ------------------------------------------------------


def _open(base: str, path: str, user: User) -> ClientConnection:
    headers = {"Origin": base, "Cookie": session_cookie(user)}
    return connect(base.replace("http://", "ws://") + path, additional_headers=headers, open_timeout=10)


def _claim(task: Task) -> None:
    task.state = TaskState.SUBMITTING
    with transaction.atomic():
        assert move([task], Step.CLAIM, ["state"])


def _beacons(scene: Scene, local_backend: Backend) -> dict[str, Task]:
    """A run of each viewer's own, made directly (not every viewer may use the backend): the
    change each viewer must hear after the run's, so one that did not hear the run's knows it."""
    beacons = {}
    for name, user in scene.viewers.items():
        beacon = Run.objects.create(owner=user, backend=local_backend, workflow_name=f"beacon-{name}")
        beacons[name] = Task.objects.create(run=beacon, task_id="b", name="b", command="true", position=0)
    return beacons


def _marks(run: Run, task: Task) -> tuple[str, str]:
    """What names a change of ``task`` of ``run`` in a frame or an event."""
    return run.pk, f'job-{task.pk}"'


def _heard(messages: Iterator[str], target: tuple[str, str], beacon: tuple[str, str]) -> bool:
    """Whether the target's change came before the beacon's (which always comes)."""
    heard = False
    for message in messages:
        if any(mark in message for mark in beacon):
            return heard
        heard = heard or any(mark in message for mark in target)
    raise AssertionError("the beacon never came")


def _frames(socket: ClientConnection) -> Iterator[str]:
    while True:
        yield str(socket.recv(timeout=10))


def _events(response: http.client.HTTPResponse) -> Iterator[str]:
    while True:
        line = response.readline().decode()
        if line.startswith("data: "):
            yield line


def _stream(base: str, path: str, user: User) -> http.client.HTTPResponse:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.request("GET", path, headers={"Cookie": session_cookie(user)})
    response = connection.getresponse()
    assert response.status == 200 and response.readline() == b"retry: 3000\n"  # open and subscribed
    return response


LIVE_ROUTES = [str(p.pattern) for p in websocket_urlpatterns] + ["/" + s.route for s in STREAMS]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", LIVE_ROUTES)
def test_every_socket_and_stream_agrees_with_the_access_module(local_backend: Backend, route: str) -> None:
    scene = _scene(local_backend)
    run, viewers = scene.run, scene.viewers
    with asgi_server() as base, ExitStack() as stack:
        if route.startswith("/"):  # a stream: everyone signed in may listen
            listening = {n: _events(stack.enter_context(_stream(base, route, u))) for n, u in viewers.items()}
        elif "run_id>" in route:  # a run's own socket: let in exactly those who see the run
            path = "/" + re.sub(r"<[^>]*run_id>", run.pk, route)
            for name, user in viewers.items():
                try:
                    with _open(base, path, user):
                        let_in = True
                except InvalidStatus as refusal:
                    assert refusal.response.status_code == 403
                    let_in = False
                assert let_in == access.may_see_run(user, run), name
            return
        else:
            listening = {n: _frames(stack.enter_context(_open(base, "/" + route, u))) for n, u in viewers.items()}
        beacons = _beacons(scene, local_backend)
        target = run.tasks.get(task_id=PENDING)
        _claim(target)
        for beacon in beacons.values():
            _claim(beacon)
        for name, messages in listening.items():
            heard = _heard(messages, _marks(run, target), _marks(beacons[name].run, beacons[name]))
            assert heard == access.may_see_run(viewers[name], run), name
