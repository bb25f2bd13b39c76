"""Embedded mode's sender: a thread beside the ticker, so that a slow webhook or mail server
(up to its timeout per message) never holds up the engine's tick. Celery mode uses beat instead."""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connection

from runs.notify.deliver import deliver_due

log = logging.getLogger("runs.notify")


class EmbeddedNotifier(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(name="scripthut-notify", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                try:
                    deliver_due()
                except Exception:
                    log.exception("sending notifications failed")
                finally:
                    close_old_connections()
        finally:
            connection.close()  # this thread's connection; a test database can then be dropped

    def stop(self) -> None:
        self.stopping.set()
