"""Celery app for deployments with a Redis broker (``REDIS_URL``).

Beat schedules ``runs.tasks.tick_task``; workers run it. Without a broker the
embedded ticker (``scripthut_site.ticker``) calls the same ``runs.engine.tick``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")

app = Celery("scripthut")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
