"""Who runs the engine's tick: the embedded ticker thread, or Celery beat + workers.

Embedded mode (no ``REDIS_URL``): ``scripthut serve`` starts ``EmbeddedTicker``,
a daemon thread that ticks every ``SCRIPTHUT_TICK_SECONDS`` and at once when woken.
Deployment mode: beat schedules ``runs.celery_tasks.tick_task`` and ``request_tick``
sends one.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from runs.celery_tasks import tick_task
from runs.engine.tick import tick
from runs.notify.deliver import deliver_due

log = logging.getLogger("runs.ticker")

_wakeup = threading.Event()
_embedded_running = threading.Event()


def request_tick() -> None:
    if _embedded_running.is_set():
        _wakeup.set()
    elif not settings.EMBEDDED:
        try:
            tick_task.delay()
        except Exception:  # the beat schedule ticks soon anyway
            log.warning("could not queue a tick; beat will run one shortly", exc_info=True)


class EmbeddedTicker(threading.Thread):
    def __init__(self, interval: float | None = None):
        super().__init__(name="scripthut-ticker", daemon=True)
        self.interval = interval or settings.SCRIPTHUT_TICK_SECONDS
        self.stopping = threading.Event()

    def run(self) -> None:
        _embedded_running.set()
        try:
            while not self.stopping.is_set():
                try:
                    tick()
                except Exception:
                    log.exception("tick failed")
                try:
                    deliver_due()  # the notifications outbox (Celery: runs.notify.celery_tasks)
                except Exception:
                    log.exception("sending notifications failed")
                finally:
                    close_old_connections()
                _wakeup.wait(self.interval)
                _wakeup.clear()
        finally:
            _embedded_running.clear()
            connection.close()  # this thread's connection; a test database can then be dropped

    def stop(self) -> None:
        self.stopping.set()
        _wakeup.set()
