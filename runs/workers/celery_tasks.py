"""Celery tasks (deployment mode); the embedded ticker calls the same engine functions.

Beat runs ``dispatch_ticks`` every ``SCRIPTHUT_DISPATCH_SECONDS``: it queues one
``tick_backend_task`` per backend that is due (each every ``poll_interval``), so a slow
or unreachable backend only occupies the worker ticking it. A user's action queues its
backend's tick at once. Every task is idempotent: a tick of a backend another worker
holds returns at once, and a lost or doubled message changes nothing, because dispatch
queues every backend again at its next poll time whatever became of the last message.
"""

from celery import shared_task

from runs import retention
from runs.engine.tick import queue_due_backends, tick_backend_by_id


@shared_task(ignore_result=True)
def dispatch_ticks() -> None:
    for backend_id in queue_due_backends():
        # Not run within a minute (every worker busy): dispatch queues a fresh one anyway.
        tick_backend_task.apply_async((backend_id,), expires=60)


@shared_task(ignore_result=True)
def tick_backend_task(backend_id: int) -> None:
    tick_backend_by_id(backend_id)


@shared_task(ignore_result=True)
def cleanup() -> None:
    """Daily (beat): finished runs' job files and old rows (runs.retention)."""
    retention.cleanup()
