from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from backends.local.settings import SHARED_ACCOUNT_WARNING, check_run_as, runs_as_portal_user, sharing_problem
from backends.models import Backend, BatchJobDefinition, ClusterIdentity, Environment
from backends.registry import kind_choices, unknown_kind

SETTINGS_HELP = (
    "The backend's own keys (README). A local backend: run_as: per_user runs each user's tasks as "
    "their own OS account (os_user, os_users); run_as: <account> runs everyone's as that one account, "
    "so that everyone on the backend can read and change each other's jobs."
)


class BackendForm(forms.ModelForm):
    """The admin's form (ModelAdmin supplies the model and fields)."""

    # A local backend's settings["run_as"], as a field of its own rather than a key to
    # type into the settings' JSON.
    run_as = forms.CharField(
        label="Run tasks as",
        required=False,
        max_length=32,
        help_text="Local backends: the unprivileged user account the tasks run as (through sudo). "
        "Empty: the portal's own user, and the backend stays staff only.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The type menu is the registry as it is now (the column has no choices).
        self.fields["kind"] = forms.ChoiceField(
            label="Type",
            choices=kind_choices(),
            error_messages={"invalid_choice": unknown_kind("%(value)s")},
        )
        self.fields["run_as"].initial = (self.instance.settings or {}).get("run_as") or ""

        self.fields["settings"].help_text = SETTINGS_HELP

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self._merge_run_as(data)
        # The same rule as the config import: a local backend whose tasks run as the
        # portal's user stays staff only.
        settings = data.get("settings") or {}
        if data.get("kind") == Backend.Kind.LOCAL and data.get("allowed_groups") and runs_as_portal_user(settings):
            self.add_error("allowed_groups", sharing_problem({"type": "local", "allowed_groups": [1]}))
        return data

    def _merge_run_as(self, data: dict[str, Any]) -> None:
        """The run_as field into the settings (it wins over a run_as typed in the JSON)."""
        if "settings" not in data:
            return  # the JSON itself is invalid: its error is shown
        user = (data.get("run_as") or "").strip()
        settings = dict(data["settings"] or {})
        if user and data.get("kind") != Backend.Kind.LOCAL:
            self.add_error("run_as", "only local backends run tasks as another user")
            return
        try:
            settings["run_as"] = check_run_as(user) if user else None
        except ValueError as exc:
            self.add_error("run_as", str(exc))
            return
        if settings["run_as"] is None:
            del settings["run_as"]
        data["settings"] = settings


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    form = BackendForm
    list_display = ["name", "kind", "enabled", "max_concurrent", "status", "last_polled_at"]
    list_filter = ["kind", "enabled", "status"]
    search_fields = ["name"]
    readonly_fields = Backend.TICK_FIELDS

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        backend = self.get_object(request, object_id)
        if request.method == "GET" and backend is not None:
            _warn_shared_account(request, backend)
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Backend, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        _warn_shared_account(request, obj)


def _warn_shared_account(request: HttpRequest, backend: Backend) -> None:
    if backend.shared_account:
        messages.warning(
            request, f"Backend {backend.name!r}, run_as: {backend.shared_account!r}: {SHARED_ACCOUNT_WARNING}."
        )


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


@admin.register(BatchJobDefinition)
class BatchJobDefinitionAdmin(admin.ModelAdmin):
    """Job definitions ScriptHut registered on AWS Batch backends. Deleting a row makes
    ScriptHut register a fresh one for that image after its next restart (e.g. once the
    definition was deregistered in AWS)."""

    list_display = ["backend", "image", "arn", "created_at"]
    list_filter = ["backend"]
    readonly_fields = ["backend", "signature", "image", "arn", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
