"""Where a local task's files may be, and opening them without being fooled by links.

A task names its own output, error and generated files, and the local backend opens them
on the portal host: unchecked, ``error_file: <data dir>/secret_key`` emptied the portal's
secret key and ``output_file: /proc/self/environ`` showed the web server's environment.
A task's files must resolve (``~``, ``..`` and symlinks: ``os.path.realpath``) inside its
run's directory or a root the backend allows, and never inside the portal's own files.
This is checked when the task is claimed, and again on the file actually opened, since
links can change after submission.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from backends.base import FileRefused, is_under, refuse_special

# Harmless to write to, a common way to discard a stream.
DISCARD = "/dev/null"


@dataclass(frozen=True)
class Confinement:
    """The directories a task's files may be in (``allowed[0]`` is the run's own) and the
    portal's files that no task may name, whatever is allowed."""

    allowed: tuple[str, ...]
    denied: tuple[str, ...]

    @classmethod
    def of(cls, allowed: list[str], denied: list[str]) -> Confinement:
        return cls(tuple(os.path.realpath(p) for p in allowed), tuple(os.path.realpath(p) for p in denied))

    def problem(self, path: str) -> str:
        """Why a task may not use the absolute ``path``, or "" if it may."""
        real = os.path.realpath(path)
        named = path if real == path else f"{path} (resolving to {real})"
        if any(is_under(real, denied) for denied in self.denied):
            return f"{named} is among the portal's own files"
        if not any(is_under(real, root) for root in self.allowed):
            return f"{named} is outside the run's directory {self.allowed[0]} and the backend's allowed_paths"
        return ""

    def check(self, path: str) -> None:
        problem = self.problem(path)
        if problem:
            raise FileRefused(problem)


def opened_path(fd: int) -> str:
    """The path of what ``fd`` really is, whatever links led to it."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _check_opened(fd: int, confinement: Confinement | None) -> None:
    real = opened_path(fd)
    refuse_special(real, os.fstat(fd).st_mode)
    if confinement is not None:
        confinement.check(real)


def read_tail(path: str, max_bytes: int, confinement: Confinement | None = None) -> str:
    """The last ``max_bytes`` of a regular file (FileNotFoundError if absent, FileRefused
    if special or, with ``confinement``, outside it)."""
    real = os.path.realpath(path)
    if confinement is not None:
        confinement.check(real)
    refuse_special(real, os.stat(real).st_mode)  # before opening: opening a device or FIFO acts
    # O_NONBLOCK: a FIFO swapped in since the stat cannot hang the portal.
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check_opened(fd, confinement)
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, max(0, size - max_bytes), os.SEEK_SET)
        return _read_up_to(fd, max_bytes).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def _read_up_to(fd: int, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    left = max_bytes
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def open_for_task(path: str, confinement: Confinement) -> int:
    """Open (create, then empty) a task's output or error file for its runner to inherit.

    Emptied only once the opened file is known to be the task's own, so a link swapped in
    after the claim-time check cannot make the portal truncate anything else.
    """
    if path == DISCARD:
        return os.open(DISCARD, os.O_WRONLY | os.O_CLOEXEC)
    real = os.path.realpath(path)
    confinement.check(real)
    make_private_dirs(os.path.dirname(real))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(real, flags, 0o600)
    try:
        _check_opened(fd, confinement)
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0700 for every directory it creates."""
    missing: list[str] = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass  # made meanwhile by another submit
