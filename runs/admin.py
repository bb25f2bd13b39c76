from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from runs.costing import admin as costing_admin  # noqa: F401  (registers budgets and prices)
from runs.models import ApiToken, AuditEvent, ObservedJob, PortalSettings, Run, Task, Workflow
from sources.admin import MASKED_HELP
from sources.git import GitError, keep_credentials, mask_credentials


class WorkflowForm(forms.ModelForm):
    """The git block's repository URL: its password or token is write-only (shown as ***,
    kept when left so), as on the source admin."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["git"] = masked_git(self.instance.git)
        if "git" in self.fields:  # not when the page only shows the workflow
            self.fields["git"].help_text = MASKED_HELP

    def clean_git(self) -> Any:
        git = self.cleaned_data.get("git")
        if isinstance(git, dict) and isinstance(git.get("repo"), str):
            stored = self.instance.git if isinstance(self.instance.git, dict) else {}
            try:
                git = {**git, "repo": keep_credentials(git["repo"], str(stored.get("repo") or ""))}
            except GitError as exc:
                raise forms.ValidationError(str(exc)) from None
        return git


def masked_git(git: Any) -> Any:
    if isinstance(git, dict) and isinstance(git.get("repo"), str):
        return {**git, "repo": mask_credentials(git["repo"])}
    return git


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["name", "backend", "max_concurrent", "description"]
    list_filter = ["backend"]
    search_fields = ["name", "command", "description"]
    list_select_related = ["backend"]
    readonly_fields = ["masked_git"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Without the change permission every field is shown as text: git only masked.
        fields = [name for name in super().get_fields(request, obj) if name != "masked_git"]
        if self.has_change_permission(request, obj):
            return fields
        return ["masked_git" if name == "git" else name for name in fields]

    @admin.display(description="Git")
    def masked_git(self, obj: Workflow) -> str:
        return json.dumps(masked_git(obj.git))


TASK_COLUMNS = ("task_id", "name", "state", "job_id", "attempt", "exit_code", "started_at", "finished_at")


class TaskInline(admin.TabularInline):
    model = Task
    fields = TASK_COLUMNS
    readonly_fields = TASK_COLUMNS
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow_name", "owner", "backend", "status", "created_at", "finished_at"]
    list_filter = ["status", "backend"]
    search_fields = ["id", "workflow_name", "owner__username"]
    list_select_related = ["owner", "backend"]
    raw_id_fields = ["owner", "workflow"]
    filter_horizontal = ["shared_with"]
    readonly_fields = ["id"]
    date_hierarchy = "created_at"
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["run", "task_id", "state", "job_id"]
    list_filter = ["state"]
    search_fields = ["task_id", "job_id"]
    raw_id_fields = ["run"]
    list_select_related = ["run"]


@admin.register(ObservedJob)
class ObservedJobAdmin(admin.ModelAdmin):
    list_display = ["backend", "job_id", "name", "user", "state", "partition", "last_seen_at"]
    list_filter = ["backend", "state"]
    search_fields = ["job_id", "name", "user"]
    list_select_related = ["backend"]
    raw_id_fields = ["our_task"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "prefix", "created_at", "last_used_at"]
    search_fields = ["user__username", "prefix"]
    list_select_related = ["user"]
    readonly_fields = ["key_hash", "prefix", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A key is shown once when issued (ApiToken.issue); the admin has nowhere to show it.
        return False


@admin.register(PortalSettings)
class PortalSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "poll_interval", "server_host", "server_port"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not PortalSettings.objects.exists()  # a single row

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only from the application."""

    list_display = ["at", "actor_name", "action", "target", "address"]
    list_filter = ["action"]
    search_fields = ["actor_name", "target"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


from runs.notify import admin as notify_admin  # noqa: E402,F401  (registers the outbox's admin)
from runs.schedules import admin as schedules_admin  # noqa: E402,F401  (registers Schedule's admin)
