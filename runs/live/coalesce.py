"""Changes of a run merged while they wait, handed on at most once per window, on a thread
of its own: the thread that committed a change (a tick, a request) only queues it.

The thread is a daemon started on first use (again in a forked child, such as a Celery
pool worker, where the parent's thread did not come along); it closes its database
connection whenever it runs out of work, and at process exit (:func:`at_exit`; a Celery pool
child, which skips it, through ``worker_process_shutdown``: :func:`runs.live.push.connect`)
what waits is handed on within a bounded time (:data:`EXIT_SECONDS`), so exit never hangs
on a push.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connection

from runs.engine.events import RunChange

log = logging.getLogger("runs.live.coalesce")

EXIT_SECONDS = 2.0


def at_exit(callback: Callable[[], object]) -> None:
    """Call ``callback`` when the interpreter exits, while it still runs thread pools: the push
    sends through ``async_to_sync``, whose executor refuses new work once the ``atexit`` hooks
    run. Threading's own exit hooks run before that (``concurrent.futures`` registers its
    shutdown there too; the hooks run last-registered first)."""
    register = getattr(threading, "_register_atexit", None)  # CPython 3.9+; private, hence the fallback
    (register or atexit.register)(callback)


class Coalescer:
    """Hands each run's changes to ``publish``, merged: a run's first change waits
    ``window`` seconds for the ones that follow, then they go as one."""

    def __init__(self, publish: Callable[[RunChange], None], window: float) -> None:
        self.publish = publish
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._waiting: dict[str, tuple[float, RunChange]] = {}  # run id -> (when due, merged change)
        self._busy = False  # the thread is handing changes on
        self._thread: threading.Thread | None = None

    def add(self, change: RunChange) -> None:
        """Queue a change (cheap: no query, no rendering)."""
        if self._pid != os.getpid():
            self._reset()  # a forked child: the parent's thread and lock are not ours
        with self._cond:
            earlier = self._waiting.get(change.run_id)
            if earlier is None:
                self._waiting[change.run_id] = (time.monotonic() + self.window, change)
            else:
                self._waiting[change.run_id] = (earlier[0], earlier[1].merged(change))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="scripthut-push", daemon=True)
                self._thread.start()
                at_exit(lambda: self.flush(EXIT_SECONDS))
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Hand on what waits now, without waiting for its window, and return once every
        change queued so far is handed on; False if that took longer than ``timeout``."""
        if self._pid != os.getpid():
            self._reset()  # a forked child that queued nothing: its parent's lock may be held for ever
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting = {run_id: (0.0, change) for run_id, (_, change) in self._waiting.items()}
            self._cond.notify_all()
            while self._waiting or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._pid != os.getpid():
                    return False
                self._cond.wait(left)
        return True

    def _work(self) -> None:
        while True:
            due = self._next_due()
            self._tidy(close_old_connections)  # one the database dropped meanwhile is opened again
            for change in due:
                self._hand_on(change)
            with self._cond:
                idle = not self._waiting
            if idle:
                # None held between bursts, closed before a flush returns (a test database can be dropped).
                self._tidy(connection.close)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _next_due(self) -> list[RunChange]:
        """Wait until some run's window has passed; take its changes."""
        with self._cond:
            while True:
                now = time.monotonic()
                due = [run_id for run_id, (when, _) in self._waiting.items() if when <= now]
                if due:
                    self._busy = True
                    return [self._waiting.pop(run_id)[1] for run_id in due]
                soonest = min((when for when, _ in self._waiting.values()), default=None)
                self._cond.wait(None if soonest is None else soonest - now)

    def _hand_on(self, change: RunChange) -> None:
        try:
            self.publish(change)
        except Exception:  # a page missing one change must never stop the pushes that follow
            log.exception("could not push the change of run %s", change.run_id)

    @staticmethod
    def _tidy(step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # the thread must live on: the next burst opens a connection again
            log.exception("the pusher could not tidy its database connection")
