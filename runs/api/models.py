"""Models of the REST API: idempotency keys of run-creating requests (runs.api.idempotent)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class IdempotencyKey(models.Model):
    """A client's ``Idempotency-Key`` of a run-creating request, and the run it created: the
    same key from the same user within IDEMPOTENCY_WINDOW gets that run again."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="unique_idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.key} -> {self.run_id}"
