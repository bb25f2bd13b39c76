"""A Celery app for bench/live_bench.py: its one task moves a task as the engine does, in a
real worker process, so the change is pushed from there through the Redis channel layer.

Started by the bench as ``celery -A live_worker worker`` (cwd bench/); needs REDIS_URL.
"""

from __future__ import annotations

import time

import bootstrap  # noqa: E402  (sets up Django for this module)

bootstrap.setup()

import redis  # noqa: E402
from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402

from runs.engine.states import Step, TaskState, move  # noqa: E402
from runs.models import Task  # noqa: E402

app = Celery("live_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="live_bench.claim")
def claim(task_pk: int) -> None:
    """Move one pending task to submitting (the engine's CLAIM step); note when it committed."""
    task = Task.objects.get(pk=task_pk)
    task.state = TaskState.SUBMITTING
    with transaction.atomic():
        move([task], Step.CLAIM, ["state"])
        committed_at = time.time()  # the push (runs.live.push) starts when this block commits
    redis.Redis.from_url(settings.REDIS_URL).set(f"live_bench:committed:{task_pk}", committed_at, ex=600)
