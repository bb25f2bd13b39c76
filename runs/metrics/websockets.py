"""The open websockets of this process (the web server serves them and ``/metrics``)."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_open = 0


def opened() -> None:
    global _open
    with _lock:
        _open += 1


def closed() -> None:
    global _open
    with _lock:
        _open -= 1


def count() -> int:
    return _open
