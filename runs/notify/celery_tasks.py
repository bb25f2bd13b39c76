"""Celery task (deployment mode) that sends due notifications; the embedded ticker calls the same function."""

from celery import shared_task

from runs.notify.deliver import deliver_due


@shared_task(ignore_result=True)
def deliver_notifications() -> None:
    deliver_due()
