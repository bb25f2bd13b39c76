"""Celery tasks (deployment mode); the embedded ticker calls the same function."""

from celery import shared_task

from runs.engine.tick import tick


@shared_task(ignore_result=True)
def tick_task() -> None:
    tick()
