"""Notification pages: everyone's preferences, and the deliveries that failed (staff)."""

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
from runs.notify.forms import PreferenceForm
from runs.notify.models import Notification, NotificationPreference
from runs.notify.webhook_url import redacted

PER_PAGE = 50


def notification_settings(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)  # LoginRequiredMiddleware: always signed in here
    pref = NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)
    form = PreferenceForm(request.POST or None, instance=pref)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Notification settings saved.")
        return redirect("notification_settings")
    recent = Notification.objects.filter(user=user).select_related("run")[:10]
    context = {
        "form": form,
        "webhook": redacted(pref.webhook_url) if pref.webhook_url else "",
        "account_email": user.email,
        "recent": recent,
    }
    return render(request, "runs/notify/settings.html", context, status=400 if form.errors else 200)


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
