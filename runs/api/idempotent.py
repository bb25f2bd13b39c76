"""Run-creating requests made safe to retry: a client that sends an ``Idempotency-Key``
header gets, for the same key within 24 hours, the run the first request created, instead of
a second run (a client that lost the answer to a POST may send it again).

The key's row is inserted in the same transaction as the run: two requests with one key at
once are serialised by the unique constraint, and the one that waited finds the first's run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Status
from ninja.errors import HttpError

from runs.actions import wake
from runs.api.base import caller
from runs.api.models import IDEMPOTENCY_WINDOW, IdempotencyKey
from runs.models import Run

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _key(request: HttpRequest) -> str:
    key = request.headers.get(HEADER, "")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise HttpError(400, f"{HEADER}: must be at most {MAX_KEY_LENGTH} printable characters")
    return key.strip()


def _replayed(run: Run) -> Status[dict[str, Any]]:
    return Status(201, {"id": run.pk, "status": run.status, "warnings": run.warnings, "replayed": True})


def created(request: HttpRequest, make: Callable[[], Run]) -> Status[dict[str, Any]]:
    """201 with the run ``make`` creates; with an idempotency key seen before, the first run."""
    key = _key(request)
    if not key:
        run = make()
        return Status(201, {"id": run.pk, "status": run.status, "warnings": run.warnings, "replayed": False})
    user = caller(request)
    mine = IdempotencyKey.objects.filter(user=user, key=key)
    mine.filter(created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW).delete()
    earlier = mine.select_related("run").first()
    if earlier:
        return _replayed(earlier.run)
    try:
        with transaction.atomic():
            run = make()
            IdempotencyKey.objects.create(user=user, key=key, run=run)
    except IntegrityError:  # another request with this key created its run first
        earlier = mine.select_related("run").first()
        if earlier is None:
            raise
        return _replayed(earlier.run)
    wake(run.backend)  # again, now that the run is committed
    return Status(201, {"id": run.pk, "status": run.status, "warnings": run.warnings, "replayed": False})


# The header, for the OpenAPI schema of every run-creating operation.
OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "description": "Any unique string (e.g. a UUID); the same key within 24 hours returns the first run.",
            "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
        }
    ]
}
