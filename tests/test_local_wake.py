"""A local job's end wakes the engine at once (its runner's exit), not at the next tick.

Tried as a user would: 1,000 instant tasks with 4 slots took 577 s, a finished process
freeing its slot only at the next tick. Real local backend, real processes, the real
embedded ticker thread (with an interval far longer than the test may take)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from backends.models import Backend
from runs.actions import create_run
from runs.models import Run, Task
from runs.workers.ticker import EmbeddedTicker


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
        assert wait_for(lambda: Run.objects.get(pk=run.pk).is_finished, 60), "the run did not finish in 60 s"
    finally:
        ticker.stop()
        ticker.join()
    assert set(Task.objects.filter(run=run).values_list("state", flat=True)) == {"completed"}
