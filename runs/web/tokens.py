"""``/settings/tokens``: API tokens people manage themselves.

A user makes named tokens (the key is shown once, in the answer to the form), each with a
scope (``read`` or ``write``) and an expiry (DEFAULT_DAYS; at most the site's maximum,
``PortalSettings.token_max_days``, that staff set here), sees when and from where each was
last used, and revokes them. Staff see and revoke anyone's. Making and revoking a token are
audited. ``scripthut createtoken`` still makes an operator's write token that never expires.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from runs.access import is_staff, require_staff, visible_tokens
from runs.audit import trail as audit
from runs.models import ApiToken, AuditEvent, PortalSettings

DEFAULT_DAYS = 90
LONGEST_DAYS = 3650  # what a form may ask for at all, site maximum or not


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. “laptop” or “CI”.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.WRITE, widget=forms.RadioSelect)
    days = forms.IntegerField(label="Expires after (days)", initial=DEFAULT_DAYS, min_value=1, max_value=LONGEST_DAYS)

    def __init__(self, *args: Any, max_days: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_days = max_days
        if max_days is not None:
            self.fields["days"].initial = min(DEFAULT_DAYS, max_days)
            self.fields["days"].help_text = f"At most {max_days} days on this portal."

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name.isprintable():
            raise forms.ValidationError("must be one line of printable characters")
        return name

    def clean_days(self) -> int:
        days = int(self.cleaned_data["days"])
        if self.max_days is not None and days > self.max_days:
            raise forms.ValidationError(f"at most {self.max_days} days on this portal")
        return days


class SiteMaxForm(forms.Form):
    max_days = forms.IntegerField(
        label="Longest expiry (days)", required=False, min_value=1, max_value=LONGEST_DAYS, help_text="Empty: no limit."
    )


def issue(user: User, name: str, scope: str, days: int) -> str:
    """A new token of ``user``'s (the key, shown once), audited."""
    expires = timezone.now() + timedelta(days=days)
    key = ApiToken.issue(user, name=name, scope=scope, expires_at=expires)
    audit.record(
        AuditEvent.Action.TOKEN_CREATED, f"token {key[: ApiToken.PREFIX_LENGTH]}… of {user.get_username()}",
        name=name, scope=scope, expires_at=expires.isoformat(),
    )  # fmt: skip
    return key


def _rows(tokens: QuerySet[ApiToken]) -> list[tuple[ApiToken, str]]:
    now = timezone.now()
    return [(t, t.refusal(now) and ("revoked" if t.revoked_at else "expired") or "active") for t in tokens]


def token_settings(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)  # LoginRequiredMiddleware: always signed in here
    portal = PortalSettings.load()
    form = TokenForm(request.POST or None, max_days=portal.token_max_days)
    new_key = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        new_key = issue(user, data["name"], data["scope"], data["days"])
        form = TokenForm(max_days=portal.token_max_days)
    mine = ApiToken.objects.filter(user=user).order_by("-created_at")
    context: dict[str, Any] = {
        "form": form,
        "new_key": new_key,
        "tokens": _rows(mine),
        "max_days": portal.token_max_days,
    }
    if is_staff(user):
        everyone = (
            visible_tokens(user).exclude(user=user).select_related("user").order_by("user__username", "-created_at")
        )
        context |= {"everyone": _rows(everyone), "site_form": SiteMaxForm(initial={"max_days": portal.token_max_days})}
    return render(request, "runs/web/tokens.html", context, status=400 if form.errors else 200)


@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(visible_tokens(request.user).select_related("user"), pk=pk)
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        audit.record(
            AuditEvent.Action.TOKEN_REVOKED, f"token {token.prefix}… of {token.user.get_username()}", name=token.name
        )
        messages.success(request, f"Token {token.name or token.prefix} of {token.user.get_username()} revoked.")
    return redirect("token_settings")


@require_POST
def token_max_days(request: HttpRequest) -> HttpResponse:
    require_staff(request.user, "the tokens' longest expiry")
    form = SiteMaxForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not saved: {'; '.join(str(e) for errs in form.errors.values() for e in errs)}")
        return redirect("token_settings")
    portal = PortalSettings.load()
    portal.token_max_days = form.cleaned_data["max_days"]
    portal.save(update_fields=["token_max_days"])
    audit.record(AuditEvent.Action.ACCESS_CHANGED, "API tokens' longest expiry", max_days=portal.token_max_days)
    messages.success(request, "Saved the tokens' longest expiry.")
    return redirect("token_settings")
