"""Waking the engine the moment a local job's runner exits (not at the next tick).

The runner is detached (``setsid``), so it is not the portal's child: its end is watched
through a pidfd (``os.pidfd_open``, Linux 5.3+), which becomes readable when the process
exits. One daemon thread per portal process waits on every watched pidfd at once
(``selectors``) and sends :data:`backends.signals.job_ended` with the backend's id; the
ticker (embedded or Celery, ``runs/workers/ticker.py``) listens and ticks that backend.

The runner writes the job's exit code and then exits, so by the time the pidfd fires the
tick's poll finds the end. A pid reused before we watch it only delays the wake to the
next tick (a watched job whose exit code is already there wakes at once).

A runner that has not written its pid when the submit stops waiting for it (a loaded
machine) is looked for by the same thread every ``LOOK_EVERY`` seconds until it has, for
``START_LIMIT`` seconds at most: left to the next tick, its end waited for a whole poll
interval.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from backends.base import JobState, JobStatus
from backends.local.status import has_ended, runner_pid
from backends.signals import job_ended

log = logging.getLogger("backends.local")


LOOK_EVERY = 0.05  # seconds between two looks for the pid of a runner not started yet
START_LIMIT = 30.0  # seconds a runner may take to start (the launcher's own limit)


@dataclass(frozen=True)
class Unstarted:
    """A job whose runner had not written its pid yet: watched once it has."""

    work_root: Path
    job_id: str
    backend_id: int


class EndWatcher:
    """Waits on the runners' pidfds in one thread, started on the first watch."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unstarted: dict[Unstarted, float] = {}  # -> time.monotonic() to give up at
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
        self._poke()
        return True

    def watch_once_started(self, job: Unstarted) -> None:
        """Watch ``job`` once its runner has written its pid (``START_LIMIT`` at most; then,
        or if it cannot be watched, ``job_ended`` is sent and the tick finds out)."""
        with self._lock:
            self._unstarted[job] = time.monotonic() + START_LIMIT
        self._poke()

    def _poke(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="scripthut-local-ends", daemon=True)
                self._thread.start()
        try:
            os.write(self._poke_w, b".")
        except BlockingIOError:  # the thread has pokes to read already
            pass

    def _loop(self) -> None:
        while True:
            ended: set[int] = set()
            for key, _ in self._selector.select(LOOK_EVERY if self._unstarted else None):
                if key.data is None:
                    os.read(self._poke_r, 4096)
                    continue
                with self._lock:
                    self._selector.unregister(key.fd)
                os.close(key.fd)
                ended.add(key.data)
            ended |= self._look_for_runners()
            for backend_id in ended:
                try:
                    job_ended.send(sender=EndWatcher, backend_id=backend_id)
                except Exception:
                    log.exception("a job_ended receiver failed")

    def _look_for_runners(self) -> set[int]:
        """Watch the runners that started since the last look; the backends of those that
        ended already, or took too long, to be told now."""
        with self._lock:
            waiting = list(self._unstarted.items())
        tell: set[int] = set()
        for job, give_up_at in waiting:
            pid = runner_pid(job.work_root, job.job_id)
            if pid is None and time.monotonic() < give_up_at:
                continue
            with self._lock:
                del self._unstarted[job]
            if pid is None or not self.watch(job.backend_id, pid) or has_ended(job.work_root, job.job_id):
                tell.add(job.backend_id)
        return tell


_watchers: dict[int, EndWatcher] = {}


def watcher() -> EndWatcher:
    """This process's watcher (a forked worker makes its own: an epoll set is shared across fork)."""
    pid = os.getpid()
    if pid not in _watchers:
        _watchers[pid] = EndWatcher()
    return _watchers[pid]


def watch_runners(
    work_root: Path, backend_id: int, job_ids: Iterable[str], watched: set[str], *, launched: bool = False
) -> None:
    """Wake the engine when these jobs' runners exit; ``watched`` (the adapter's) is updated.
    ``launched``: the submit just launched them, so a runner without a pid is starting (it
    is watched once started); otherwise its pid cannot be read (a job of an account the
    portal cannot read as), and it is left to the ticks."""
    for job_id in job_ids:
        if job_id in watched:
            continue
        watched.add(job_id)
        pid = runner_pid(work_root, job_id)
        if pid is None:
            if launched:
                watcher().watch_once_started(Unstarted(work_root, job_id, backend_id))
            continue
        if not watcher().watch(backend_id, pid) or has_ended(work_root, job_id):
            # Not watchable, or it ended before it was watched: tell the engine now.
            job_ended.send(sender=EndWatcher, backend_id=backend_id)


def running_ids(statuses: Mapping[str, JobStatus]) -> set[str]:
    return {job_id for job_id, status in statuses.items() if status.state == JobState.RUNNING}
