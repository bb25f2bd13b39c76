"""The preferences form: the webhook URL is write-only (it may hold a token), like other secrets;
the email address must be one the portal trusts for the user (``runs.notify.trust``)."""

from __future__ import annotations

from typing import Any

from django import forms

from runs.notify.models import NotificationPreference
from runs.notify.trust import untrusted_reason
from runs.notify.webhook_url import url_problem


class PreferenceForm(forms.ModelForm):  # type: ignore[type-arg]
    new_webhook_url = forms.CharField(
        label="Webhook URL",
        required=False,
        max_length=2000,
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.slack.com/services/…", "autocomplete": "off"}),
        help_text="JSON is POSTed here (Slack incoming-webhook URLs get a Slack message). "
        "Stored encrypted and never shown again; leave empty to keep the current one.",
    )
    remove_webhook = forms.BooleanField(label="Remove the webhook", required=False)

    class Meta:
        model = NotificationPreference
        fields = ["on", "email", "first_task_started", "webhook_slack"]
        labels = {
            "on": "Notify me when a run ends",
            "email": "Email address",
            "first_task_started": "Also when a run's first task starts",
            "webhook_slack": 'The webhook is Slack-style (send {"text": …})',
        }
        widgets = {"on": forms.RadioSelect}

    def clean_email(self) -> str:
        email = str(self.cleaned_data["email"]).strip()
        reason = untrusted_reason(self.instance.user, email)
        if reason:
            raise forms.ValidationError(reason)
        return email

    def clean_new_webhook_url(self) -> str:
        url = self.cleaned_data["new_webhook_url"].strip()
        problem = url_problem(url) if url else None
        if problem:
            raise forms.ValidationError(problem)
        return url

    def save(self, commit: bool = True) -> Any:
        pref = super().save(commit=False)
        if self.cleaned_data["remove_webhook"]:
            pref.webhook_url = ""
        elif self.cleaned_data["new_webhook_url"]:
            pref.webhook_url = self.cleaned_data["new_webhook_url"]
        if commit:
            pref.save()
        return pref


class ConfirmAddressForm(forms.Form):
    address = forms.EmailField(
        label="Confirm another address",
        max_length=254,
        help_text="A link is emailed to it; open it while signed in and the address can receive your notifications.",
    )
