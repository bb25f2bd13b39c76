"""Waking the engine the moment a job on an SSH scheduler leaves its end marker.

Between two marker reads (``end_markers_every``) an end would wait for the next tick: a
chain of short tasks with native dependencies off then advances one link per read. So
one command stays open on the backend's SSH connection: a bash loop on the login node
that looks at the markers' directory twice a second (builtins only: a glob and a
``read -t`` as its sleep, no process per pass) and prints a line when a new ``.end``
file is there. Each line sends :data:`backends.signals.job_ended` for the backend; the
ticker (``runs/workers/ticker.py``) ticks it at once, and that tick reads the markers as
any other (:meth:`~backends.ssh.scheduler.SshScheduler.read_ends`). Nothing here asks
the scheduler: no slurmctld or pbs_server load.

The loop ends by itself after ``WATCH_SECONDS`` (and when the connection closes: its
stdin ends); the adapter starts it again while it has live jobs.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time

import paramiko

from backends.base import BackendError, BackendUnavailable
from backends.scripts import MARKERS_DIR
from backends.signals import job_ended
from backends.ssh.transport import SshTransport

log = logging.getLogger("backends.ssh")

WATCH_SECONDS = 600  # the remote loop's life; started again by the next tick with live jobs
RESTART_AFTER = 5.0  # a loop that ended (or failed to start) is not started again sooner

# Prints "ended" after a pass that found an end marker it had not seen; exits when its
# stdin (the SSH channel) closes, or after $1 seconds. (Given to bash -c, not on stdin:
# the loop's read would take the script's own lines.)
WATCH_SCRIPT = f"""
mkdir -p -- "$HOME/{MARKERS_DIR}" && cd "$HOME/{MARKERS_DIR}" || exit 1
shopt -s nullglob
declare -A seen
until [ "$SECONDS" -ge "$1" ]; do
    new=''
    for f in */*.end; do
        [ -n "${{seen[$f]}}" ] || {{ seen[$f]=1; new=1; }}
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

    def ensure(self) -> None:
        """Start the loop unless it runs (or ended less than ``RESTART_AFTER`` ago)."""
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            if time.monotonic() - self._started_at < RESTART_AFTER:
                return
            self._started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="scripthut-ssh-ends", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channel = self._channel
        if channel is not None:
            channel.close()

    def _run(self) -> None:
        try:
            channel = self.transport.open_stream(f"bash -c {shlex.quote(WATCH_SCRIPT)} watch {WATCH_SECONDS}")
        except (BackendUnavailable, BackendError) as exc:
            log.info("ssh %s: end markers not watched for now: %s", self.transport.where, exc)
            return
        with self._lock:
            self._channel = channel
        try:
            for _ in channel.makefile("r"):
                job_ended.send(sender=EndMarkerWatch, backend_id=self.backend_id)
        except Exception:  # the connection dropped: the ticks go on, the next one starts it again
            log.debug("ssh %s: end marker watch ended", self.transport.where, exc_info=True)
        finally:
            channel.close()
