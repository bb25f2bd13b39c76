"""Schedules in Django's admin: the same checks as the page, the API and the config."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from runs.schedules.models import Schedule
from runs.schedules.timing import cron_problem, timezone_problem


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ["name", "workflow", "source", "file", "owner", "cron", "timezone", "overlap", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for key, problem_of in (("cron", cron_problem), ("timezone", timezone_problem)):
            problem = problem_of(data[key]) if data.get(key) else ""
            if problem:
                self.add_error(key, problem)
        if bool(data.get("workflow")) == bool(data.get("source")) or bool(data.get("source")) != bool(data.get("file")):
            self.add_error(None, "give either a workflow, or a source and its file")
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ["name", "owner", "cron", "timezone", "enabled", "next_fire_at", "last_outcome"]
    list_filter = ["enabled", "overlap"]
    search_fields = ["name"]

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        if change and {"cron", "timezone", "enabled"} & set(form.changed_data):
            obj.next_fire_at = None  # armed again from now (Schedule.save), as the page does
        super().save_model(request, obj, form, change)
