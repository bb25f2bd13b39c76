"""The SQLite claim on a backend (embedded mode): a short lease that a heartbeat renews
while the tick runs, and that runs out soon after its holder stops renewing it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backends.models import Backend
from runs.engine.lease import backend_claim, interrupted, take_lease
from tests.threads import db_thread

LEASE = 2  # seconds


@pytest.fixture
def short_lease(settings):  # type: ignore[no-untyped-def]
    settings.SCRIPTHUT_BACKEND_LEASE_SECONDS = LEASE
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL claims are advisory locks (tests/test_workers.py)")


def lease_until(backend: Backend) -> datetime | None:
    return Backend.objects.get(pk=backend.pk).lease_until


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_long_tick_keeps_its_lease_and_a_dead_one_loses_it(short_lease, time_machine) -> None:
    # The clock stands still unless the test moves it; the heartbeat still beats in real time.
    time_machine.move_to(timezone.now(), tick=False)
    backend = Backend.objects.create(name="b", kind=Backend.Kind.LOCAL)
    claimed, release = threading.Event(), threading.Event()
    held: list[bool] = []

    def long_tick() -> None:
        with backend_claim(backend) as claim:
            held.append(claim)
            claimed.set()
            release.wait(30)

    ticker = db_thread(long_tick)
    assert claimed.wait(10) and held == [True]
    # Three times most of a lease passes (4.5 s in all, over twice the lease): each time only
    # the heartbeat's renewal, from the clock's new time, keeps the lease.
    for _ in range(3):
        time_machine.shift(timedelta(seconds=LEASE - 0.5))
        renewed = timezone.now() + timedelta(seconds=LEASE)
        wait_until(lambda: lease_until(backend) == renewed, "the heartbeat renewed the lease")  # noqa: B023
        assert take_lease(backend) is None, "a second ticker took the backend of a tick still running"
        assert interrupted(list(Backend.objects.all())) == set()
    release.set()
    ticker.join()
    assert Backend.objects.get(pk=backend.pk).lease_owner == ""

    # A ticker that died leaves its lease: it runs out after the lease time, not 300 s.
    token = take_lease(backend)
    assert token is not None
    time_machine.shift(timedelta(seconds=LEASE - 0.1))
    assert interrupted(list(Backend.objects.all())) == set()
    time_machine.shift(timedelta(seconds=0.2))
    assert interrupted(list(Backend.objects.all())) == {backend.pk}
    with backend_claim(backend) as claim:
        assert claim


def test_dispatch_queues_due_and_dead_ticks_once(db: None) -> None:
    """Beat's dispatch queues a backend when due, or at once when its last tick died; it
    leaves a running tick's claim alone, and does not queue the same backend twice."""
    from runs.engine.tick import queue_due_backends

    now = timezone.now()
    later, earlier = now + timedelta(hours=1), now - timedelta(seconds=1)
    live = Backend.objects.create(name="live", kind=Backend.Kind.LOCAL)  # never polled: due
    dead = Backend.objects.create(
        name="dead", kind=Backend.Kind.LOCAL, next_poll_at=later, lease_owner="gone:1:1", lease_until=earlier
    )
    Backend.objects.create(name="idle", kind=Backend.Kind.LOCAL, next_poll_at=later)
    with backend_claim(live) as held:
        assert held
        mark = Backend.objects.get(pk=live.pk).lease_owner
        assert mark
        assert sorted(queue_due_backends()) == sorted([live.pk, dead.pk])
        assert Backend.objects.get(pk=live.pk).lease_owner == mark, "a running tick lost its claim"
        assert Backend.objects.get(pk=dead.pk).lease_owner == ""
        assert queue_due_backends() == []
