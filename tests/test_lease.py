"""The SQLite claim on a backend (embedded mode): a short lease that a heartbeat renews
while the tick runs, and that runs out soon after its holder stops renewing it."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from backends.models import Backend
from runs.engine.lease import backend_claim, interrupted, take_lease


@pytest.fixture
def short_lease(settings):  # type: ignore[no-untyped-def]
    settings.SCRIPTHUT_BACKEND_LEASE_SECONDS = 2
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL claims are advisory locks (tests/test_workers.py)")


@pytest.mark.django_db(transaction=True)
def test_a_long_tick_keeps_its_lease_and_a_dead_one_loses_it(short_lease) -> None:
    backend = Backend.objects.create(name="b", kind=Backend.Kind.LOCAL)
    release = threading.Event()

    def long_tick() -> None:
        try:
            with backend_claim(backend) as held:
                assert held
                release.wait(10)
        finally:
            connection.close()

    ticker = threading.Thread(target=long_tick)
    ticker.start()
    time.sleep(4)  # twice the lease: only the heartbeat keeps it
    assert take_lease(backend) is None, "a second ticker took the backend of a tick still running"
    assert interrupted(list(Backend.objects.all())) == set()
    release.set()
    ticker.join()
    assert Backend.objects.get(pk=backend.pk).lease_owner == ""

    # A ticker that died leaves its lease: it runs out after the lease time, not 300 s.
    token = take_lease(backend)
    assert token is not None
    assert interrupted(list(Backend.objects.all())) == set()
    time.sleep(2.5)
    assert interrupted(list(Backend.objects.all())) == {backend.pk}
    with backend_claim(backend) as held:
        assert held


def test_dispatch_queues_due_and_dead_ticks_once(db: None) -> None:
    """Beat's dispatch queues a backend when due, or at once when its last tick died; it
    leaves a running tick's claim alone, and does not queue the same backend twice."""
    from datetime import timedelta

    from django.utils import timezone

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
