"""Counters of the ticks of each backend, added to by whichever process ticks it."""

from __future__ import annotations

from django.db import models


class TickCounters(models.Model):
    """Monotonic counters (Prometheus counters and summaries) of one backend's ticks."""

    backend = models.OneToOneField("backends.Backend", on_delete=models.CASCADE, primary_key=True)
    ticks = models.PositiveBigIntegerField(default=0)
    tick_errors = models.PositiveBigIntegerField(default=0)
    tick_seconds = models.FloatField(default=0.0)
    last_tick_seconds = models.FloatField(default=0.0)
    polls = models.PositiveBigIntegerField(default=0)
    poll_seconds = models.FloatField(default=0.0)
    submits = models.PositiveBigIntegerField(default=0)
    submit_seconds = models.FloatField(default=0.0)

    class Meta:
        verbose_name_plural = "tick counters"

    def __str__(self) -> str:
        return f"tick counters of backend {self.backend_id}"
