from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from backends.models import Backend, ClusterIdentity, Environment


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


@admin.register(ClusterIdentity)
class ClusterIdentityAdmin(admin.ModelAdmin):
    """Who runs jobs as whom. Staff may remove an identity; users add their own on
    /settings/identities. The key and passphrase are neither shown nor even read."""

    list_display = ["user", "backend", "username", "fingerprint", "updated_at"]
    list_filter = ["backend"]
    search_fields = ["user__username", "username"]
    fields = readonly_fields = ("user", "backend", "username", "fingerprint", "certificate", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClusterIdentity]:
        return super().get_queryset(request).defer("private_key", "passphrase")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
