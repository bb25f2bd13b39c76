"""Waking the engine the moment a local job's runner exits (not at the next tick).

The runner is detached (``setsid``), so it is not the portal's child: its end is watched
through a pidfd (``os.pidfd_open``, Linux 5.3+), which becomes readable when the process
exits. One daemon thread per portal process waits on every watched pidfd at once
(``selectors``) and sends :data:`backends.signals.job_ended` with the backend's id; the
ticker (embedded or Celery, ``runs/workers/ticker.py``) listens and ticks that backend.

The runner writes the job's exit code and then exits, so by the time the pidfd fires the
tick's poll finds the end. A pid reused before we watch it only delays the wake to the
next tick (a watched job whose exit code is already there wakes at once).
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from backends.base import JobState, JobStatus
from backends.local.status import has_ended, runner_pid
from backends.signals import job_ended

log = logging.getLogger("backends.local")


class EndWatcher:
    """Waits on the runners' pidfds in one thread, started on the first watch."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._poke_r, self._poke_w = os.pipe()  # wakes the thread when a pidfd is added
        os.set_blocking(self._poke_w, False)
        self._selector.register(self._poke_r, selectors.EVENT_READ, None)

    def watch(self, backend_id: int, pid: int) -> bool:
        """Send ``job_ended(backend_id)`` when process ``pid`` exits; False if it cannot be
        watched (gone already, or no pidfd on this system)."""
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            return False
        with self._lock:
            self._selector.register(fd, selectors.EVENT_READ, backend_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="scripthut-local-ends", daemon=True)
                self._thread.start()
        try:
            os.write(self._poke_w, b".")
        except BlockingIOError:  # the thread has pokes to read already
            pass
        return True

    def _loop(self) -> None:
        while True:
            ended: set[int] = set()
            for key, _ in self._selector.select():
                if key.data is None:
                    os.read(self._poke_r, 4096)
                    continue
                with self._lock:
                    self._selector.unregister(key.fd)
                os.close(key.fd)
                ended.add(key.data)
            for backend_id in ended:
                try:
                    job_ended.send(sender=EndWatcher, backend_id=backend_id)
                except Exception:
                    log.exception("a job_ended receiver failed")


_watchers: dict[int, EndWatcher] = {}


def watcher() -> EndWatcher:
    """This process's watcher (a forked worker makes its own: an epoll set is shared across fork)."""
    pid = os.getpid()
    if pid not in _watchers:
        _watchers[pid] = EndWatcher()
    return _watchers[pid]


def watch_runners(work_root: Path, backend_id: int, job_ids: Iterable[str], watched: set[str]) -> None:
    """Wake the engine when these jobs' runners exit; ``watched`` (the adapter's) is updated.
    A runner whose pid cannot be read (a job of an account the portal cannot read as) is
    left to the ticks."""
    for job_id in job_ids:
        if job_id in watched:
            continue
        watched.add(job_id)
        pid = runner_pid(work_root, job_id)
        if pid is None:
            continue
        if not watcher().watch(backend_id, pid) or has_ended(work_root, job_id):
            # Not watchable, or it ended before it was watched: tell the engine now.
            job_ended.send(sender=EndWatcher, backend_id=backend_id)


def running_ids(statuses: Mapping[str, JobStatus]) -> set[str]:
    return {job_id for job_id, status in statuses.items() if status.state == JobState.RUNNING}
