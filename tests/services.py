"""Test services run as child processes of the test session, on loopback ports of their own.

A fixture starts one with ``ChildProcess.start``, waits with ``wait_until`` and stops it with
``stop`` in its teardown. Only this process's own children are ever stopped (by pid).
``unavailable`` skips a test whose service cannot start, except under ``CI``: there it FAILS,
as in tests/cluster.py, so that a broken setup never passes as skipped tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL
T = TypeVar("T")


class ServiceError(RuntimeError):
    """A test service did not start; the message has the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(what: str, exc: BaseException) -> NoReturn:
    reason = f"{what} unavailable: {exc}"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass
class ChildProcess:
    """A service process whose stdout and stderr go to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, name: str, cmd: list[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> ChildProcess:
        with log.open("wb") as out:
            # A session of its own: stop() ends the whole group, also what a shell started
            # (`printf ... | exec redis-server -` outlived a stop of its shell).
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        return cls(name, proc, log)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30) -> None:
        """Return once ``ready()`` is true; raise ServiceError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._signal_group(signal.SIGKILL)  # what the group leader left behind

    def _signal_group(self, signum: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:  # the group is gone
            pass


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def serve(what: str, start: Callable[[], tuple[ChildProcess, T]]) -> Iterator[T]:
    """The body of a service fixture: ``start()``, yield what the tests use, stop the process.

    ``yield from serve("test LDAP server", lambda: start_slapd(...))``; a service that cannot
    start is ``unavailable``.
    """
    try:
        child, handle = start()
    except (ServiceError, OSError) as exc:
        unavailable(what, exc)
    try:
        yield handle
    finally:
        child.stop()
