"""Celery app for deployments with a Redis broker (``REDIS_URL``).

Beat runs ``runs.workers.celery_tasks.dispatch_ticks``, which queues one backend's tick
(``tick_backend_task``) per due backend for the workers. Without a broker the embedded
ticker (``runs.workers.ticker.EmbeddedTicker``) calls the same engine tick in-process.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")

app = Celery("scripthut")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Our task modules are named celery_tasks.py, so that "tasks" is left to the Task model.
app.autodiscover_tasks(related_name="celery_tasks")
