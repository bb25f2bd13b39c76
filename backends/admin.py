from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from backends.local.settings import runs_as_portal_user, sharing_problem
from backends.models import Backend, Environment


class BackendForm(forms.ModelForm):
    """The admin's form (ModelAdmin supplies the model and fields)."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # The same rule as the config import: a local backend whose tasks run as the
        # portal's user stays staff only.
        settings = data.get("settings") or {}
        if data.get("kind") == Backend.Kind.LOCAL and data.get("allowed_groups") and runs_as_portal_user(settings):
            self.add_error("allowed_groups", sharing_problem({"type": "local", "allowed_groups": [1]}))
        return data


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    form = BackendForm
    list_display = ["name", "kind", "enabled", "max_concurrent", "status", "last_polled_at"]
    list_filter = ["kind", "enabled", "status"]
    search_fields = ["name"]
    # Written by the poller, not by people.
    readonly_fields = [
        "status",
        "status_message",
        "last_polled_at",
        "next_poll_at",
        "lease_until",
        "lease_owner",
    ]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name"]
    search_fields = ["name"]
