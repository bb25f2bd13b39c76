"""Notification pages: everyone's preferences and confirmed addresses, and the deliveries that failed (staff)."""

from __future__ import annotations

from typing import cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from runs.access import require_staff
from runs.notify import trust
from runs.notify.forms import ConfirmAddressForm, PreferenceForm
from runs.notify.models import Notification, NotificationPreference, VerifiedEmail
from runs.notify.webhook_url import redacted

PER_PAGE = 50


def _user(request: HttpRequest) -> User:
    return cast(User, request.user)  # LoginRequiredMiddleware: always signed in here


def _settings_page(
    request: HttpRequest, form: PreferenceForm, confirm_form: ConfirmAddressForm | None = None
) -> HttpResponse:
    user = _user(request)
    pref = form.instance
    context = {
        "form": form,
        "confirm_form": confirm_form or ConfirmAddressForm(),
        "webhook": redacted(pref.webhook_url) if pref.webhook_url else "",
        "account_email": user.email,
        "verified": VerifiedEmail.objects.filter(user=user).order_by("address"),
        "recent": Notification.objects.filter(user=user).select_related("run")[:10],
    }
    failed = form.errors or (confirm_form is not None and confirm_form.errors)
    return render(request, "runs/notify/settings.html", context, status=400 if failed else 200)


def _preference(user: User) -> NotificationPreference:
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)


def notification_settings(request: HttpRequest) -> HttpResponse:
    form = PreferenceForm(request.POST or None, instance=_preference(_user(request)))
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Notification settings saved.")
        return redirect("notification_settings")
    return _settings_page(request, form)


@require_POST
def send_confirmation(request: HttpRequest) -> HttpResponse:
    """Email a confirmation link to an address the user wants their notifications at."""
    user = _user(request)
    confirm_form = ConfirmAddressForm(request.POST)
    if confirm_form.is_valid():
        address = confirm_form.cleaned_data["address"]
        try:
            trust.send_confirmation(user, address)
        except trust.ConfirmError as exc:
            confirm_form.add_error("address", str(exc))
        else:
            messages.success(request, f"A confirmation link was sent to {address}; it is valid for 2 days.")
            return redirect("notification_settings")
    return _settings_page(request, PreferenceForm(instance=_preference(user)), confirm_form)


def confirm_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link of a confirmation email: GET shows what it confirms, POST confirms it."""
    user = _user(request)
    try:
        address = trust.confirmed_address(user, token)
    except trust.ConfirmError as exc:
        return render(request, "runs/notify/confirm.html", {"problem": str(exc)}, status=400)
    if request.method == "POST":
        trust.confirm(user, token)
        messages.success(request, f"{address} can now receive your notifications.")
        return redirect("notification_settings")
    return render(request, "runs/notify/confirm.html", {"address": address})


@require_POST
def forget_email(request: HttpRequest, pk: int) -> HttpResponse:
    verified = get_object_or_404(VerifiedEmail, pk=pk, user=_user(request))
    verified.delete()
    messages.success(request, f"{verified.address} no longer receives your notifications.")
    return redirect("notification_settings")


def failed_notifications(request: HttpRequest) -> HttpResponse:
    require_staff(request.user, "failed notifications")
    state = request.GET.get("state", Notification.State.FAILED)
    if state not in Notification.State.values:
        state = Notification.State.FAILED
    rows = Notification.objects.filter(state=state).select_related("user", "run")
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    counts = {s: Notification.objects.filter(state=s).count() for s in Notification.State.values}
    context = {"page": page, "state": state, "counts": counts}
    return render(request, "runs/notify/failed.html", context)


@require_POST
def retry_notification(request: HttpRequest, pk: int) -> HttpResponse:
    """Give a failed notification a fresh set of attempts (e.g. after the receiver was fixed)."""
    require_staff(request.user, "failed notifications")
    note = get_object_or_404(Notification, pk=pk, state=Notification.State.FAILED)
    Notification.objects.filter(pk=note.pk, state=Notification.State.FAILED).update(
        state=Notification.State.PENDING, attempts=0, next_attempt_at=timezone.now(), claimed_at=None
    )
    messages.success(request, f"Notification {note.pk} will be sent again.")
    return redirect("failed_notifications")
