"""``GET /health``: liveness for load balancers and monitors; no login, no token."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from backends.models import Backend

log = logging.getLogger("runs.web.health")


@login_not_required
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        backends = {
            name: status if enabled else "disabled"
            for name, status, enabled in Backend.objects.values_list("name", "status", "enabled")
        }
    except DatabaseError:
        # The reason goes to the log only: it can name hosts and users.
        log.exception("health check: database unreachable")
        return JsonResponse({"status": "error", "database": "error", "backends": {}}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "backends": backends})


# Mounted with include() so that urls.py needs a single line.
urlpatterns = [path("", health, name="health")]
