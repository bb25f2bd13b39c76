"""Admin list of the outbox, filterable by state (failed deliveries), channel and event."""

from __future__ import annotations

from django.contrib import admin

from runs.notify.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "event", "channel", "destination", "state", "attempts", "last_error"]
    list_filter = ["state", "channel", "event"]
    search_fields = ["user__username", "run__id", "dedupe_key"]
    exclude = ["target"]  # may hold a webhook token
    readonly_fields = ["user", "run", "event", "channel", "slack", "subject", "payload", "dedupe_key"]
    readonly_fields += ["idempotency_key", "attempts", "claimed_at", "sent_at", "last_error", "created_at"]

    @admin.display(description="to")
    def destination(self, note: Notification) -> str:
        return note.shown_target
