from __future__ import annotations

from django.contrib import admin

from backends.models import Backend, Environment


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
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
