from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from sources.git import GitError, keep_credentials, mask_credentials
from sources.models import Source

MASKED_HELP = (
    "A password or token in the URL is stored encrypted and never shown: it appears as ***; "
    "leave *** to keep it, or type a new one."
)


class SourceForm(forms.ModelForm):
    """The URL's password or token is write-only: shown masked, kept when left masked."""

    url = forms.CharField(required=False, max_length=500, help_text=MASKED_HELP)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["url"] = mask_credentials(self.instance.url or "")

    def clean_url(self) -> str:
        try:
            return keep_credentials(self.cleaned_data.get("url") or "", self.instance.url or "")
        except GitError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    form = SourceForm
    list_display = ["name", "kind", "backend", "synced_at", "synced_sha"]
    list_filter = ["kind", "backend"]
    search_fields = ["name", "path"]  # the URL is encrypted: not searchable
    list_select_related = ["backend"]
    # Written by the sync, not by people.
    readonly_fields = ["synced_at", "synced_sha", "checkout_dir", "sync_error", "workflow_files", "masked_url"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Without the change permission every field is shown as text: the URL only masked.
        fields = [name for name in super().get_fields(request, obj) if name != "masked_url"]
        if self.has_change_permission(request, obj):
            return fields
        return ["masked_url" if name == "url" else name for name in fields]

    @admin.display(description="URL")
    def masked_url(self, obj: Source) -> str:
        return mask_credentials(obj.url or "")
