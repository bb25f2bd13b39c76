# The Celery app is made current in every process (web server, CLI), so that a user's
# action queues its backend's tick on the configured broker, not on Celery's default.
from scripthut_site.celery import app as celery_app

__all__ = ["celery_app"]
