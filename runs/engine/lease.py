"""One ticker per backend at a time, and a dead ticker's claim gone within seconds.

PostgreSQL: a session advisory lock on the ticking connection. PostgreSQL drops it the
moment that connection ends, so a worker killed with SIGKILL mid-tick frees its backend
as soon as the server notices the closed socket.

SQLite (embedded mode, one machine): the backend row's lease, short
(``SCRIPTHUT_BACKEND_LEASE_SECONDS``) and renewed by a heartbeat thread while the tick
runs; a dead ticker's lease runs out a few seconds after its last heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from backends.models import Backend

log = logging.getLogger("runs.engine")

# The first key of our advisory locks (the second is the backend id): "SH".
LOCK_SPACE = 0x5348


def holder() -> str:
    """Who holds a lease, for the admin: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"[:64]


@contextmanager
def backend_claim(backend: Backend) -> Iterator[bool]:
    """Yield True if this process may tick ``backend`` now (another ticker holds it otherwise)."""
    claim = _advisory_claim if connection.vendor == "postgresql" else _lease_claim
    with claim(backend) as held:
        yield held


@contextmanager
def _advisory_claim(backend: Backend) -> Iterator[bool]:
    key = [LOCK_SPACE, backend.pk % 2**31]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        held = bool(cursor.fetchone()[0])
    if not held:
        yield False
        return
    try:
        yield True
    finally:
        _advisory_unlock(key)


def _advisory_unlock(key: list[int]) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    except DatabaseError:
        # The connection is broken or its transaction aborted: closing it releases the lock.
        log.warning("could not release the tick lock of backend %s; closing the connection", key[1])
        if not connection.in_atomic_block:
            connection.close()


@contextmanager
def _lease_claim(backend: Backend) -> Iterator[bool]:
    token = take_lease(backend)
    if token is None:
        yield False
        return
    # Inside a caller's transaction the lease is invisible to others anyway; a heartbeat
    # on its own connection would only wait for that transaction's write lock.
    heartbeat = None if connection.in_atomic_block else Heartbeat(backend.pk, token)
    if heartbeat:
        heartbeat.start()
    try:
        yield True
    finally:
        if heartbeat:
            heartbeat.stop()
        Backend.objects.filter(pk=backend.pk, lease_owner=token).update(lease_until=None, lease_owner="")


def lease_seconds() -> int:
    return int(settings.SCRIPTHUT_BACKEND_LEASE_SECONDS)


def take_lease(backend: Backend) -> str | None:
    """A conditional UPDATE takes the lease if it is free or has run out."""
    now = timezone.now()
    token = f"{holder()}:{os.urandom(4).hex()}"[-64:]
    taken = (
        Backend.objects.filter(pk=backend.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + timedelta(seconds=lease_seconds()), lease_owner=token)
    )
    return token if taken else None


class Heartbeat(threading.Thread):
    """Renews a lease every third of its length until stopped."""

    def __init__(self, backend_id: int, token: str):
        super().__init__(name=f"lease-heartbeat-{backend_id}", daemon=True)
        self.backend_id, self.token = backend_id, token
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(lease_seconds() / 3):
                until = timezone.now() + timedelta(seconds=lease_seconds())
                Backend.objects.filter(pk=self.backend_id, lease_owner=self.token).update(lease_until=until)
        except DatabaseError:
            log.warning("lease heartbeat of backend %s failed", self.backend_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self.stopping.set()
        self.join()
