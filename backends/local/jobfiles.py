"""Reading a local job's runner state files (pid, times, exit code, ...).

With ``run_as`` the tasks' user owns the work root and could replace a state file or a
directory on the way with a link to a file only root may read, or with a FIFO that
blocks its reader: the portal opens every component without following links and reads
only small regular files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
MAX_STATE_BYTES = 4096
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class JobFiles:
    """``with JobFiles(root, tag) as files:`` the files of ``<root>/jobs/<tag>/``."""

    def __init__(self, root: Path, tag: str) -> None:
        self.parts = (str(root), "jobs", tag)
        self.fd: int | None = None

    def __enter__(self) -> JobFiles:
        fd: int | None = None
        try:
            for part in self.parts:
                parent, fd = fd, os.open(part, _DIR, dir_fd=fd)
                if parent is not None:
                    os.close(parent)
        except OSError:  # absent, or not a plain directory
            if fd is not None:
                os.close(fd)
            fd = None
        self.fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @property
    def present(self) -> bool:
        return self.fd is not None

    def exists(self, name: str) -> bool:
        if self.fd is None:
            return False
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def read(self, name: str) -> str:
        """The stripped text of a state file; "" if absent or not a small regular file."""
        if self.fd is None:
            return ""
        try:
            fd = os.open(name, _FILE, dir_fd=self.fd)
        except OSError:
            return ""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return os.read(fd, MAX_STATE_BYTES).decode("utf-8", errors="replace").strip()
        finally:
            os.close(fd)

    def number(self, name: str) -> int | None:
        return _parsed(self.read(name), int)

    def timestamp(self, name: str) -> float | None:
        return _parsed(self.read(name), float)


def _parsed(text: str, kind: Callable[[str], T]) -> T | None:
    """``text`` as a number, None if empty or garbled (the job's user writes these files)."""
    try:
        return kind(text) if text else None
    except ValueError:
        return None
