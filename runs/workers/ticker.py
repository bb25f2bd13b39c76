"""Who runs the engine's tick: the embedded ticker thread, or Celery beat + workers.

Embedded mode (no ``REDIS_URL``): ``scripthut serve`` starts ``EmbeddedTicker``,
a daemon thread that ticks every ``SCRIPTHUT_TICK_SECONDS`` and at once when woken.
Deployment mode: beat's ``dispatch_ticks`` queues a ``tick_backend_task`` per due backend,
and ``request_tick(backend_id)`` queues that backend's tick at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F
from django.utils import timezone

from backends.models import Backend
from backends.signals import job_ended
from runs import retention
from runs.engine.tick import tick_due_backends
from runs.notify.background import EmbeddedNotifier
from runs.workers.celery_tasks import tick_backend_task

log = logging.getLogger("runs.workers.ticker")

_wakeup = threading.Event()
_embedded_running = threading.Event()
_woken: set[int] = set()  # backends whose job ended since the embedded ticker last looked
_woken_lock = threading.Lock()
_wake_pipe: int | None = None  # scripthut serve's web server: the ticker runs in its child (ticker_process)


def connect() -> None:
    """Listen for jobs that end between ticks (:data:`backends.signals.job_ended`)."""
    job_ended.connect(_on_job_end, dispatch_uid="scripthut-job-ended")


def _on_job_end(sender: object, backend_id: int, **kwargs: object) -> None:
    """A job ended: tick its backend now. The embedded ticker is only woken (no query
    here, in the thread that saw the end); a Celery deployment queues that backend's tick."""
    if _embedded_running.is_set():
        with _woken_lock:
            _woken.add(backend_id)
        _wakeup.set()
    elif not settings.EMBEDDED:
        request_tick(backend_id)


def _take_woken() -> set[int]:
    with _woken_lock:
        woken = set(_woken)
        _woken.clear()
        return woken


def request_tick(backend_id: int) -> None:
    """Tick this backend as soon as possible: make it due now, then queue a worker's task in
    deployment mode, or wake the embedded ticker (in this process or its child). Due now
    also when a tick of it is under way (the claim is held: the queued task ticks nothing):
    that tick leaves it due (``runs.engine.tick.next_tick_at``)."""
    Backend.objects.filter(pk=backend_id).update(next_poll_at=timezone.now(), tick_requests=F("tick_requests") + 1)
    if not settings.EMBEDDED:
        try:
            tick_backend_task.delay(backend_id)
            return
        except Exception:  # beat's dispatch queues the backend: it is due
            log.warning("could not queue a tick; beat will queue one shortly", exc_info=True)
    if _embedded_running.is_set():
        _wakeup.set()
    elif _wake_pipe is not None:
        try:
            os.write(_wake_pipe, b".")
        except (BlockingIOError, BrokenPipeError):  # woken already / gone (the server is stopping)
            pass


def wake_through(pipe: int | None) -> None:
    """Wake the ticker through this pipe (the web server of ``scripthut serve``; None: no more)."""
    global _wake_pipe
    _wake_pipe = pipe


def wake() -> None:
    """Tick at once (the ticker's process, told by the web server through the pipe)."""
    _wakeup.set()


class EmbeddedTicker(threading.Thread):
    def __init__(self, interval: float | None = None, also: Sequence[Callable[[], object]] = ()):
        """``also``: called after every tick (``scripthut serve`` passes the schedules'
        ``fire_due``, which this module cannot import: starting a run wakes the ticker)."""
        super().__init__(name="scripthut-ticker", daemon=True)
        self.interval = interval or settings.SCRIPTHUT_TICK_SECONDS
        self.also = tuple(also)
        self.stopping = threading.Event()

    def run(self) -> None:
        _embedded_running.set()
        notifier = EmbeddedNotifier(self.interval)  # sends the notifications outbox beside the ticks
        notifier.start()
        next_cleanup_check = time.monotonic() + 60  # not in the way of a start
        first = True  # a start looks at every backend: jobs may have ended while none ticked
        try:
            while not self.stopping.is_set():
                _wakeup.clear()  # before the tick: a wake during the tick ticks again at once
                try:
                    tick_due_backends(force=first, also=_take_woken())
                    first = False
                    for call in self.also:
                        call()
                    if time.monotonic() >= next_cleanup_check:  # daily; looked at once a minute
                        next_cleanup_check = time.monotonic() + 60
                        retention.cleanup_if_due()
                except Exception:
                    log.exception("tick failed")
                finally:
                    close_old_connections()
                _wakeup.wait(self.interval)
        finally:
            notifier.stop()
            notifier.join()
            _embedded_running.clear()
            connection.close()  # this thread's connection; a test database can then be dropped

    def stop(self) -> None:
        self.stopping.set()
        _wakeup.set()
