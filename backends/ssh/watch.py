"""Waking the engine the moment a job on an SSH scheduler leaves its end marker.

Between two marker reads (``end_markers_every``) an end would wait for the next tick: a
chain of short tasks with native dependencies off then advances one link per read. So
one command stays open on the backend's SSH connection: a bash loop on the login node
that looks at the marker directories of the runs with live jobs twice a second (builtins
only: a glob per run and a ``read -t`` as its sleep, no process per pass) and prints a
line when a new ``.end`` file is there. Each line sends :data:`backends.signals.job_ended`
for the backend; the ticker (``runs/workers/ticker.py``) ticks it at once, and that tick
reads the markers as any other (:meth:`~backends.ssh.scheduler.SshScheduler.read_ends`).
Nothing here asks the scheduler: no slurmctld or pbs_server load.

A run the loop does not watch yet (a submit, a marker read names it) starts the loop
again with it. The loop ends by itself after ``WATCH_SECONDS`` (and when the connection
closes: its stdin ends); the adapter starts it again while it has live jobs.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Iterable

import paramiko

from backends.base import BackendError, BackendUnavailable
from backends.scripts import MARKERS_DIR
from backends.signals import job_ended
from backends.ssh.transport import SshTransport

log = logging.getLogger("backends.ssh")

WATCH_SECONDS = 600  # the remote loop's life; started again by the next tick with live jobs
RESTART_AFTER = 5.0  # the loop is not started again sooner (meanwhile the marker reads see ends)

# Prints "ended" after a pass that found an end marker it had not seen in the directories
# of the runs named after $1; exits when its stdin (the SSH channel) closes, or after $1
# seconds. (Given to bash -c, not on stdin: the loop's read would take the script's lines.)
WATCH_SCRIPT = f"""
mkdir -p -- "$HOME/{MARKERS_DIR}" && cd "$HOME/{MARKERS_DIR}" || exit 1
shopt -s nullglob
declare -A seen
until [ "$SECONDS" -ge "$1" ]; do
    new=''
    for run in "${{@:2}}"; do
        for f in "$run"/*.end; do
            [ -n "${{seen[$f]}}" ] || {{ seen[$f]=1; new=1; }}
        done
    done
    [ -n "$new" ] && echo ended
    read -r -t 0.5 -u 0 _
    [ $? -gt 128 ] || exit 0
done
"""


class EndMarkerWatch:
    """The watching loop of one adapter (one SSH login), and the thread that reads it."""

    def __init__(self, transport: SshTransport, backend_id: int):
        self.transport = transport
        self.backend_id = backend_id
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._channel: paramiko.Channel | None = None
        self._started_at = float("-inf")
        self._closed = False
        self._runs: frozenset[str] = frozenset()  # the runs the loop watches

    def ensure(self, run_ids: Iterable[str]) -> None:
        """Have the loop watch these runs (and those it watches): start it, or start it
        again with a run it does not watch yet, at most every ``RESTART_AFTER`` seconds."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            runs = frozenset(run_ids) | (self._runs if running else frozenset())
            if self._closed or not runs or (running and runs <= self._runs):
                return
            if time.monotonic() - self._started_at < RESTART_AFTER:
                return
            if self._channel is not None:
                self._channel.close()  # its thread ends; the new loop watches every run
            self._started_at, self._runs, self._channel = time.monotonic(), runs, None
            self._thread = threading.Thread(target=self._run, args=(runs,), name="scripthut-ssh-ends", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channel = self._channel
        if channel is not None:
            channel.close()

    def _run(self, runs: frozenset[str]) -> None:
        command = f"bash -c {shlex.quote(WATCH_SCRIPT)} watch {WATCH_SECONDS} " + " ".join(map(shlex.quote, runs))
        try:
            channel = self.transport.open_stream(command)
        except (BackendUnavailable, BackendError) as exc:
            log.info("ssh %s: end markers not watched for now: %s", self.transport.where, exc)
            return
        with self._lock:
            if self._closed or self._runs is not runs:  # closed, or replaced, while it opened
                channel.close()
                return
            self._channel = channel
        try:
            for _ in channel.makefile("r"):
                job_ended.send(sender=EndMarkerWatch, backend_id=self.backend_id)
        except Exception:  # the connection dropped: the ticks go on, and start the loop again
            log.debug("ssh %s: end marker watch ended", self.transport.where, exc_info=True)
        finally:
            channel.close()
