"""Budgets are set in the admin; the stored prices and the alerts sent are shown read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from runs.costing.budgets import month_start, spent
from runs.costing.models import Budget, BudgetAlert, PriceList


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "monthly_usd", "spent_this_month"]
    search_fields = ["user__username", "group__name"]
    list_select_related = ["user", "group"]
    raw_id_fields = ["user"]

    @admin.display(description="Spent this month (USD)")
    def spent_this_month(self, obj: Budget) -> str:
        return f"{spent(obj, month_start()):.2f}"


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnly):
    list_display = ["budget", "user", "month", "threshold", "spent_usd", "at"]
    list_filter = ["threshold", "month"]
    list_select_related = ["budget__user", "budget__group", "user"]


@admin.register(PriceList)
class PriceListAdmin(ReadOnly):
    """Where the prices came from; ``scripthut pricing import FILE`` or ``refresh`` changes them."""

    list_display = ["source", "prices_date", "imported_at", "next_check_at", "last_error"]
