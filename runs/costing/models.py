"""The stored prices and the monthly budgets (registered with the ``runs`` app by ``runs.models``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


def _price() -> models.DecimalField:  # type: ignore[type-arg]
    return models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)


class PriceList(models.Model):
    """Where the stored prices came from and when (one row, pk=1)."""

    source = models.CharField(max_length=1000, blank=True, help_text="The path or URL the prices were read from.")
    prices_date = models.DateTimeField(null=True, blank=True, help_text="Date of the prices (file time or fetch).")
    imported_at = models.DateTimeField(null=True, blank=True)
    fingerprint = models.CharField(max_length=200, blank=True, help_text="What was imported (path, size, mtime).")
    next_check_at = models.DateTimeField(null=True, blank=True, help_text="When a URL source is fetched again.")
    last_error = models.TextField(blank=True, help_text="Why the last refresh failed (the old prices stay).")

    def __str__(self) -> str:
        return f"prices from {self.source or 'nowhere'}"

    @classmethod
    def load(cls) -> PriceList:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class InstancePrice(models.Model):
    """One EC2 instance type in one region: its shape and Linux prices (USD per hour)."""

    region = models.CharField(max_length=32)
    instance_type = models.CharField(max_length=64)
    vcpus = models.PositiveIntegerField()
    memory_gib = models.FloatField()
    ondemand = _price()
    spot_min = _price()
    spot_avg = _price()
    spot_max = _price()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["region", "instance_type"], name="unique_price_per_region")]

    def __str__(self) -> str:
        return f"{self.instance_type} in {self.region}"


class Budget(models.Model):
    """A monthly spending limit for one user or one group (the sum of its members' tasks).

    Runs beyond it still start (cost is an estimate); the owner is told at 80 % and 100 %.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="budget"
    )
    group = models.OneToOneField("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="budget")
    monthly_usd = models.DecimalField(max_digits=12, decimal_places=2, help_text="USD per calendar month (UTC).")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="budget_for_user_or_group",
                violation_error_message="A budget is for one user or one group: choose exactly one.",
            ),
            models.CheckConstraint(
                condition=Q(monthly_usd__gt=0),
                name="budget_positive",
                violation_error_message="The monthly amount must be more than 0.",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{who}: ${self.monthly_usd}/month"


class BudgetAlert(models.Model):
    """That a user was told their budget reached a threshold in a month: each is told once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="First day of the month (UTC).")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the budget: 80 or 100.")
    spent_usd = models.DecimalField(max_digits=14, decimal_places=2)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "user", "month", "threshold"], name="one_alert_per_threshold")
        ]

    def __str__(self) -> str:
        return f"{self.budget} reached {self.threshold}% in {self.month:%Y-%m} (told {self.user})"
