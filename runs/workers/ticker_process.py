"""The embedded ticker in a process of its own, beside ``scripthut serve``'s web server.

In one process the web server and the ticker share one interpreter lock: sixteen people
reading pages slowed a run of 1,000 local tasks fivefold (``bench/local_load_bench.py``). So
``scripthut serve`` starts ``python -m runs.workers.ticker_process`` as its child, which runs
:class:`~runs.workers.ticker.EmbeddedTicker` there, and talks to it through two pipes:

- *wake* (web → ticker): a byte asks for a tick now (a run started, a cancel); its end of file
  says the web server is gone, and the ticker then stops after its tick (also after kill -9
  of the server alone);
- *changes* (ticker → web): the engine's committed changes (:class:`RunChange`), one JSON line
  each, merged per run on the ticker's side. The web server renders and pushes them to its
  pages (embedded mode's channel layer lives in its memory).

One ticker per data dir: the child holds ``ticker.lock`` there (``flock``, released by the
kernel when it dies) before it clears the leases a killed ticker left, so a server started
again while the old ticker finishes its tick waits for it instead of ticking beside it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from runs.engine.events import RunChange

log = logging.getLogger("runs.workers.ticker")

STOP_SECONDS = 30.0  # a tick under way may take this long to end when the server stops
FORWARD_SECONDS = 0.05  # the ticker merges a run's changes this long before handing them on


# -- the web server's side ------------------------------------------------------------------


class TickerProcess:
    """The ticker child of ``scripthut serve``; started at once, stopped with :meth:`stop`."""

    def __init__(self) -> None:
        from runs.workers import ticker

        wake_read, self._wake = os.pipe()
        changes, changes_write = os.pipe()
        command = [sys.executable, "-m", "runs.workers.ticker_process", str(wake_read), str(changes_write)]
        self.process = subprocess.Popen(command, pass_fds=(wake_read, changes_write))
        os.close(wake_read)
        os.close(changes_write)
        os.set_blocking(self._wake, False)
        ticker.wake_through(self._wake)
        self._reader = threading.Thread(
            target=_push_changes, args=(os.fdopen(changes, "rb"),), name="scripthut-ticker-changes", daemon=True
        )
        self._reader.start()

    def stop(self) -> None:
        """End of file on the wake pipe: the ticker ends its tick and exits."""
        from runs.workers import ticker

        ticker.wake_through(None)
        os.close(self._wake)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the ticker did not stop in %.0f s; killing it", STOP_SECONDS)
            self.process.kill()
            self.process.wait()
        self._reader.join(5)


def _push_changes(lines: IO[bytes]) -> None:
    """Hand the ticker's changes to this process's live push, until the ticker exits."""
    from runs.live import push

    with lines:
        for line in lines:
            try:
                push.pusher.add(_change(json.loads(line)))
            except Exception:  # one change a page misses must not stop the ones that follow
                log.exception("could not read a change from the ticker")


def _change(data: dict[str, object]) -> RunChange:
    pks = data["task_pks"]
    assert isinstance(pks, list)
    return RunChange(str(data["run_id"]), frozenset(int(pk) for pk in pks), bool(data["run_status"]))


# -- the ticker's side --------------------------------------------------------------------


def main(wake_fd: int, changes_fd: int) -> None:
    import django

    django.setup()
    from django.conf import settings

    from backends.models import Backend
    from runs.live import push
    from runs.schedules.fire import fire_due
    from runs.workers.ticker import EmbeddedTicker, wake

    ticker = EmbeddedTicker(also=[fire_due])
    server_gone = threading.Event()

    def follow_server() -> None:
        while os.read(wake_fd, 4096):
            wake()
        server_gone.set()
        ticker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):  # Ctrl+C reaches the whole process group
        signal.signal(signum, lambda *_: ticker.stop())
    threading.Thread(target=follow_server, name="scripthut-ticker-wake", daemon=True).start()
    changes = os.fdopen(changes_fd, "wb", buffering=0)
    push.hand_to(_forwarder(changes), FORWARD_SECONDS)
    with one_ticker(Path(settings.DATA_DIR), server_gone) as alone:
        if not alone:
            return
        # The only ticker of this data dir: leases left by a killed one are stale.
        Backend.objects.update(lease_until=None, lease_owner="")
        ticker.start()
        while ticker.is_alive():
            ticker.join(1.0)  # wakes for the signal handlers
    push.flush()


def _forwarder(changes: IO[bytes]) -> Callable[[RunChange], None]:
    def forward(change: RunChange) -> None:
        line = {"run_id": change.run_id, "task_pks": sorted(change.task_pks), "run_status": change.run_status}
        try:
            changes.write(json.dumps(line).encode() + b"\n")
        except BrokenPipeError:  # the server is gone; the ticker stops after its tick
            pass

    return forward


@contextmanager
def one_ticker(data_dir: Path, server_gone: threading.Event) -> Iterator[bool]:
    """Hold the data dir's ticker lock; waits while an earlier ticker still lives (and gives
    up, yielding False, if the server goes meanwhile)."""
    waited = False
    with open(data_dir / "ticker.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.warning("another ticker of %s is still running; waiting for it to end", data_dir)
                    waited = True
                if server_gone.wait(0.5):
                    yield False
                    return
        yield True


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
    main(int(sys.argv[1]), int(sys.argv[2]))
