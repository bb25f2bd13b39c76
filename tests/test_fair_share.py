"""A backend's free slots are shared between users, then between each user's runs; tasks
waiting for a slot say why. Real local backend, real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from backends.base import JobState
from backends.models import ClusterIdentity
from backends.registry import get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.states import ACTIVE
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import Run, Task
from tests.conftest import local_user
from tests.test_cli import scripthut


def t(task_id: str, command: str = "true") -> dict:
    return {"id": task_id, "name": task_id, "command": command}


def active_by_run() -> dict[str, int]:
    rows = Task.objects.filter(state__in=ACTIVE).values_list("run").annotate(n=Count("id"))
    return dict(rows.values_list("run", "n"))


def reasons(run: Run) -> set[str]:
    """What its pending tasks show (the run read again: the reason may be the run's)."""
    fresh = Run.objects.get(pk=run.pk)
    return {shown_reason(task) for task in fresh.tasks.filter(state=Task.State.PENDING)}


def started(run: Run) -> int:
    return run.tasks.exclude(state=Task.State.PENDING).count()


def test_a_small_run_beside_a_big_one_gets_the_next_free_slot(user, bob, local_backend):
    """Tried as a user would: a 4-task run started after a 1,000-task run on the same
    backend waited for the whole big run. Its first task must go at the next tick a slot frees."""
    big = create_run(
        owner=user,
        backend=local_backend,
        payload=[t(f"big.{n:04d}", "sleep 3") for n in range(1000)],
        workflow_name="big",
        max_concurrent=1000,
    )
    tick_due_backends(force=True)
    assert started(big) == 4
    # Its tasks run a while too: a local tick submits again as slots free, and the reasons
    # asserted below are those of the tick's last round.
    small = create_run(
        owner=bob, backend=local_backend, payload=[t(f"s{n}", "sleep 3") for n in range(4)], workflow_name="small"
    )
    tick_due_backends(force=True)  # nothing has freed yet: the small run says why it waits
    assert started(small) == 0
    waited_because = reasons(small)
    big_before = started(big)
    deadline = time.monotonic() + 30
    while started(big) + started(small) == big_before:  # until a tick submits anything
        assert time.monotonic() < deadline, "nothing was submitted for 30 s"
        time.sleep(0.2)
        tick_due_backends(force=True)
    assert started(small) >= 1, f"the big run took every freed slot ({started(big) - big_before})"
    assert waited_because == {"waiting: backend full, 4 of 4 slots in use by 1 user"}
    assert "waiting: backend full, 4 of 4 slots in use by 2 users" in reasons(big)
    cancel_run(big)
    cancel_run(small)
    tick_due_backends(force=True)


def test_free_slots_go_round_robin_between_users_then_their_runs(user, bob, local_backend):
    carol = local_user("carol", "pw-carol-123")
    local_backend.max_concurrent = 6
    local_backend.save()
    work = [t(f"w{n}", "sleep 5") for n in range(10)]
    alice_1 = create_run(owner=user, backend=local_backend, payload=work, workflow_name="a1", max_concurrent=10)
    alice_2 = create_run(owner=user, backend=local_backend, payload=work, workflow_name="a2", max_concurrent=10)
    bobs = create_run(owner=bob, backend=local_backend, payload=work, workflow_name="b", max_concurrent=10)
    carols = create_run(owner=carol, backend=local_backend, payload=work, workflow_name="c", max_concurrent=1)
    tick_due_backends(force=True)
    # Slot by slot: alice (a1), bob, carol (now at her run's limit), alice (a2), bob, alice (a1).
    assert active_by_run() == {alice_1.pk: 2, alice_2.pk: 1, bobs.pk: 2, carols.pk: 1}
    assert reasons(carols) == {"waiting: run limit, 1 of 1 running"}
    assert reasons(bobs) == {"waiting: backend full, 6 of 6 slots in use by 3 users"}
    for run in (alice_1, alice_2, bobs, carols):
        cancel_run(run)
    tick_due_backends(force=True)


def test_three_users_each_get_a_third(user, bob, local_backend):
    carol = local_user("carol", "pw-carol-123")
    local_backend.max_concurrent = 6
    local_backend.save()
    work = [t(f"w{n}", "sleep 5") for n in range(10)]
    runs = [
        create_run(owner=owner, backend=local_backend, payload=work, workflow_name=owner.username, max_concurrent=10)
        for owner in (user, bob, carol)
    ]
    tick_due_backends(force=True)
    assert active_by_run() == {run.pk: 2 for run in runs}
    for run in runs:
        cancel_run(run)
    tick_due_backends(force=True)


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_run_wait_says_why_the_run_waits(tmp_path):
    """`scripthut run --wait` prints the waiting reason while the backend is full."""
    env = _embedded_home(tmp_path)
    Path(env["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n    max_concurrent: 1\n")
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps([t("slow", "sleep 3")]))
    second.write_text(json.dumps([t("quick")]))
    scripthut(env, "run", str(first), "--backend", "local")
    done = scripthut(env, "run", str(second), "--backend", "local", "--wait")
    assert "waiting: backend full, 1 of 1 slots in use by 1 user" in done.stdout, done.stdout
    assert "completed" in done.stdout


def _embedded_home(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    root = str(Path(__file__).parent.parent)
    return env | {
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
        "PYTHONPATH": root,
    }


def test_a_per_user_backend_gives_each_owner_their_share(user, bob, local_backend):
    """A per_user backend ticks one owner at a time: the first owner must not take the
    whole backend. Owners whose runs have no ready task do not count."""
    from runs.engine.fair_share import Load, owner_room

    carol = local_user("carol", "pw-carol-123")
    work = [t(f"w{n}", "sleep 5") for n in range(10)]
    alices = create_run(owner=user, backend=local_backend, payload=work, workflow_name="a", max_concurrent=10)
    create_run(owner=bob, backend=local_backend, payload=work, workflow_name="b", max_concurrent=10)
    carols = create_run(owner=carol, backend=local_backend, payload=[t("only")], workflow_name="c")
    carols.tasks.update(state=Task.State.SUBMITTED)  # nothing of hers is ready
    dave = local_user("dave", "pw-dave-12345")
    create_run(owner=dave, backend=local_backend, payload=work, workflow_name="d", max_concurrent=10)
    for owner in (user, bob, carol):  # dave has no cluster identity: his tasks cannot go
        ClusterIdentity.objects.create(user=owner, backend=local_backend, username=owner.username)
    load = Load.of(local_backend)
    assert owner_room(local_backend, user.pk, [alices], 6, load) == 3
    assert owner_room(local_backend, user.pk, [alices], 0, load) == 0


def _queries_of_a_claiming_tick(owners: list, backend, runs_each: int) -> int:
    """Queries of a tick that sees one task of every run end and claims the next one of each."""
    backend.max_concurrent = 1000
    backend.save()
    two = [t("a", "sleep 1"), t("b", "sleep 1")]
    runs = [
        create_run(owner=o, backend=backend, payload=two, workflow_name="q", max_concurrent=1)
        for o in owners
        for _ in range(runs_each)
    ]
    tick_due_backends(force=True)  # every run's first task
    first = list(Task.objects.filter(run__in=runs, task_id="a").values_list("job_id", flat=True))
    adapter = get_adapter(backend)
    deadline = time.monotonic() + 60
    while any(s.state != JobState.COMPLETED for s in adapter.poll(first).statuses.values()):
        assert time.monotonic() < deadline, "the first tasks did not end in 60 s"
        time.sleep(0.1)
    with CaptureQueriesContext(connection) as queries:
        tick_due_backends(force=True)
    assert Task.objects.filter(run__in=runs, task_id="b").exclude(state=Task.State.PENDING).count() == len(runs)
    return len(queries)


def test_a_tick_costs_the_same_queries_for_3_runs_or_12(user, bob, local_backend):
    """Tried as a user would: with 10 users x 5 runs a tick cost 279 queries (two claim
    queries and two status queries per run). One claim statement for all the runs of a
    backend, and one status read for all the runs that changed: flat in the number of runs."""
    few = _queries_of_a_claiming_tick([user, bob], local_backend, 1)
    Run.objects.all().delete()
    many = _queries_of_a_claiming_tick([user, bob], local_backend, 6)
    assert many == few, f"{few} queries for 2 runs, {many} for 12"
