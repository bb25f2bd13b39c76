from __future__ import annotations

from django.contrib import admin

from sources.models import Source


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "backend", "synced_at", "synced_sha"]
    list_filter = ["kind", "backend"]
    search_fields = ["name", "url", "path"]
    list_select_related = ["backend"]
    # Written by the sync, not by people.
    readonly_fields = ["synced_at", "synced_sha", "sync_error", "workflow_files"]
