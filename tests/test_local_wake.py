"""A local job's end wakes the engine at once (its runner's exit), not at the next tick,
and so does a run started while a tick of its backend is under way.

Tried as a user would: 1,000 instant tasks with 4 slots took 577 s, a finished process
freeing its slot only at the next tick. Real local backend, real processes, the real
embedded ticker thread (with an interval far longer than the test may take)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from backends.local.ends import watch_runners
from backends.models import Backend
from backends.signals import job_ended
from runs.actions import create_run
from runs.engine import tick
from runs.engine.tick import due_backends, tick_backend, tick_due_backends
from runs.models import Run, Task
from runs.workers.ticker import EmbeddedTicker
from tests.threads import db_thread


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_task_that_ends_frees_its_slot_and_releases_its_dependents_at_once(user, local_backend, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # threads' connections closed
    Backend.objects.filter(pk=local_backend.pk).update(poll_interval=600, max_concurrent=1)
    chain = [
        {"id": "a", "name": "a", "command": "sleep 0.5"},
        {"id": "b", "name": "b", "command": "sleep 0.5", "deps": ["a"]},
        {"id": "c", "name": "c", "command": "true"},
    ]
    ticker = EmbeddedTicker(interval=600)  # only a wake can tick again within the test
    ticker.start()
    try:
        run = create_run(owner=user, backend=local_backend, payload=chain, workflow_name="wake")
        finished = wait_for(lambda: Run.objects.get(pk=run.pk).is_finished, 60)
        tasks = list(Task.objects.filter(run=run).values_list("task_id", "state", "job_id"))
        due = Backend.objects.values_list("next_poll_at", "tick_requests").get(pk=local_backend.pk)
        assert finished, f"the run did not finish in 60 s: tasks {tasks}, backend due at and asked {due}"
    finally:
        ticker.stop()
        ticker.join()
    assert set(Task.objects.filter(run=run).values_list("state", flat=True)) == {"completed"}


@pytest.mark.django_db(transaction=True)
def test_a_run_started_during_a_tick_of_its_backend_is_ticked_next(user, local_backend, monkeypatch):
    """CI once saw the test above wait 60 s for nothing: its run was created while the ticker's
    first tick ran, and that tick's end put the backend's next tick 600 s away, over the
    "due now" the new run had asked for. Here the run is started from another thread in
    the middle of a tick."""
    Backend.objects.filter(pk=local_backend.pk).update(poll_interval=600)
    started: list[Run] = []
    cluster_info = tick.refresh_cluster_info

    def start_a_run_then_read_the_cluster_info(*args, **kwargs):  # the tick's last step, after the submit
        if not started:
            db_thread(lambda: started.append(create_run(**one_task))).join()
        cluster_info(*args, **kwargs)

    one_task = {"owner": user, "backend": local_backend, "payload": [{"id": "a", "name": "a", "command": "true"}]}
    one_task["workflow_name"] = "during a tick"
    monkeypatch.setattr(tick, "refresh_cluster_info", start_a_run_then_read_the_cluster_info)
    assert tick_backend(Backend.objects.get(pk=local_backend.pk))
    assert started and started[0].tasks.get().state == "pending"  # the tick had submitted before

    assert local_backend.pk in {backend.pk for backend in due_backends()}
    tick_due_backends()  # not forced: only a backend that is due
    assert started[0].tasks.get().job_id


@pytest.mark.django_db(transaction=True)
def test_a_run_started_as_a_tick_ends_is_ticked_next(user, local_backend, monkeypatch):
    """The same, one step later: the run's request for a tick came after the tick's end had
    read the clock, before it wrote the next tick's time (CI saw it wait 60 s again: the
    request's "due now" was later than the tick's end, so the tick took it for its own)."""
    Backend.objects.filter(pk=local_backend.pk).update(poll_interval=600)
    started: list[Run] = []
    every = tick.tick_every

    def start_a_run_then_say_the_interval(*args, **kwargs):  # the tick's end, after its `now`
        if not started:
            one_task = {"id": "a", "name": "a", "command": "true"}
            create = {"owner": user, "backend": local_backend, "payload": [one_task], "workflow_name": "at the end"}
            db_thread(lambda: started.append(create_run(**create))).join()
        return every(*args, **kwargs)

    monkeypatch.setattr(tick, "tick_every", start_a_run_then_say_the_interval)
    assert tick_backend(Backend.objects.get(pk=local_backend.pk))
    assert started and started[0].tasks.get().state == "pending"

    assert local_backend.pk in {backend.pk for backend in due_backends()}
    tick_due_backends()  # not forced: only a backend that is due
    assert started[0].tasks.get().job_id


def process_state(pid: int) -> str:
    """R, S, Z (exited, not reaped yet)... or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_runner_slow_to_start_is_watched_once_it_has_started(tmp_path):
    """A loaded machine: the submit stopped waiting (2 s) before the runner wrote its pid.
    Its end was then never watched, and the run waited for the next tick (600 s here)."""
    told: list[tuple[int, str]] = []
    runner: subprocess.Popen[bytes] | None = None

    def on_end(sender: object, backend_id: int, **kwargs: object) -> None:
        told.append((backend_id, process_state(runner.pid) if runner else "not started"))

    job_ended.connect(on_end, weak=False, dispatch_uid="test-slow-runner")
    try:
        (tmp_path / "jobs" / "slow").mkdir(parents=True)
        watch_runners(tmp_path, 7, ["slow"], set(), launched=True)  # no pid yet
        runner = subprocess.Popen(["sleep", "0.5"])
        (tmp_path / "jobs" / "slow" / "pid").write_text(f"{runner.pid}\n")
        assert wait_for(lambda: told, 10), "the runner's end woke nobody"
        assert told == [(7, "Z")]  # told once it had exited (a zombie: this test reaps it)
    finally:
        job_ended.disconnect(dispatch_uid="test-slow-runner")
        if runner:
            runner.wait()
