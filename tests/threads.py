"""A thread for tests that act on the database as a second worker or process would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def db_thread(target: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread:
    """Start a thread running ``target(*args, **kwargs)`` that closes its own database
    connections when it ends. (Django opens one per thread; left open, it lingers until the
    garbage collector finds it, and PostgreSQL refuses to drop the test database meanwhile.)"""

    def run() -> None:
        try:
            target(*args, **kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name=f"test-{getattr(target, '__name__', 'thread')}", daemon=True)
    thread.start()
    return thread
