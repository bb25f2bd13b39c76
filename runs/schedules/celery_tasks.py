"""Beat's entry for schedules (deployment mode): every ``SCRIPTHUT_DISPATCH_SECONDS``, as the
ticks' dispatch. Two beats, or a message run twice, fire a due time once (runs.schedules.fire)."""

from celery import shared_task

from runs.schedules.fire import fire_due


@shared_task(ignore_result=True)
def fire_schedules() -> None:
    fire_due()
