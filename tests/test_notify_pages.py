"""The notification pages: preferences (everyone), deliveries (staff), the staff count on the dashboard."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from runs.models import Notification, NotificationPreference
from runs.notify.outbox import enqueue
from tests.browser import chromium_available, live_portal, login, screenshot

pytestmark = pytest.mark.django_db
SLACK = "https://hooks.slack.com/services/T0/B0/very-secret-token"
DEAD_HOOK = "http://127.0.0.1:9/services/T0/B0/very-secret-token"  # loopback: a retry never leaves the machine


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _failed(user: User, key: str = "k1", url: str = DEAD_HOOK) -> Notification:
    NotificationPreference.objects.update_or_create(user=user, defaults={"on": "always", "webhook_url": url})
    enqueue(user=user, event="run.failed", subject="s", payload={}, dedupe_key=key)
    Notification.objects.filter(channel="webhook").update(state="failed", attempts=8, last_error="HTTP 500")
    return Notification.objects.get(dedupe_key=key, channel="webhook")


def test_preferences_are_saved_and_the_webhook_never_shown_back(user):
    client = signed_in(user)
    form = {"on": "always", "email": "me@example.org", "first_task_started": "on", "new_webhook_url": SLACK}
    assert client.post("/settings/notifications", form).status_code == 302
    pref = NotificationPreference.objects.get(user=user)
    assert (pref.on, pref.email, pref.first_task_started, pref.webhook_url) == ("always", "me@example.org", True, SLACK)
    page = client.get("/settings/notifications").content.decode()
    assert "very-secret-token" not in page and "https://hooks.slack.com/…" in page
    # Saving again without a new URL keeps the webhook; "remove" removes it.
    client.post("/settings/notifications", {"on": "failure", "email": ""})
    assert NotificationPreference.objects.get(user=user).webhook_url == SLACK
    client.post("/settings/notifications", {"on": "failure", "email": "", "remove_webhook": "on"})
    assert NotificationPreference.objects.get(user=user).webhook_url == ""


def test_bad_preferences_are_a_400_naming_each_problem_and_save_nothing(user):
    form = {"on": "sometimes", "email": "not-an-address", "new_webhook_url": "javascript:alert(1)"}
    response = signed_in(user).post("/settings/notifications", form)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was saved" in page and "http:// or https://" in page
    assert "valid email address" in page and "sometimes is not one of the available choices" in page
    assert not NotificationPreference.objects.exists()


def test_failed_deliveries_are_for_staff_with_a_count_on_their_dashboard(user, staff):
    note = _failed(user)
    assert signed_in(user).get("/notifications/failed").status_code == 403
    assert "could not be delivered" not in signed_in(user).get("/").content.decode()
    client = signed_in(staff)
    assert "1</strong> notification could not be delivered" in client.get("/").content.decode()
    page = client.get("/notifications/failed").content.decode()
    assert "HTTP 500" in page and "alice" in page and "very-secret-token" not in page
    assert client.post(f"/notifications/{note.pk}/retry").status_code == 302
    note.refresh_from_db()
    assert (note.state, note.attempts) == ("pending", 0)
    assert signed_in(user).post(f"/notifications/{note.pk}/retry").status_code == 403


def test_the_admin_lists_failed_deliveries_without_webhook_tokens(user, staff):
    _failed(user)
    staff.is_superuser = True
    staff.save()
    page = signed_in(staff).get("/admin/runs/notification/?state__exact=failed").content.decode()
    assert "HTTP 500" in page and "very-secret-token" not in page


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing")
def test_preferences_and_deliveries_in_a_browser(live_server: Any, transactional_db: None, monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    User.objects.create_user("carol", password="pw-carol-123", is_staff=True, email="carol@example.org")
    researcher = User.objects.create_user("dave", password="pw-dave-1234")
    _failed(researcher, "k1")
    _failed(researcher, "k2", url="http://127.0.0.1:9/hook")  # both on loopback: the ticker retries
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "carol", "pw-carol-123")
        expect(page.locator(".notify-failed")).to_contain_text("2 notifications could not be delivered")
        screenshot(page, "notify-01-dashboard-staff")

        page.click("nav.mainnav >> text=Notifications")
        expect(page.locator("h1")).to_have_text("Notifications")
        page.check("input[value=always]")
        page.fill("input[name=new_webhook_url]", "ftp://example.org/x")
        page.click("button:has-text('Save')")
        expect(page.locator(".alert.error")).to_contain_text("http:// or https://")
        screenshot(page, "notify-02-settings-error")
        page.fill("input[name=new_webhook_url]", SLACK)
        page.check("input[name=first_task_started]")
        page.click("button:has-text('Save')")
        expect(page.locator(".alert.success")).to_contain_text("saved")
        expect(page.locator("text=https://hooks.slack.com/…")).to_be_visible()
        screenshot(page, "notify-03-settings-saved")

        page.click("text=Deliveries (staff)")
        expect(page.locator("table.notify-deliveries tbody tr")).to_have_count(2)
        expect(page.locator("table.notify-deliveries .t-failed").first).to_have_text("HTTP 500")
        screenshot(page, "notify-04-failed-deliveries")
        page.locator("table.notify-deliveries button:has-text('Retry')").first.click()
        expect(page.locator("table.notify-deliveries tbody tr")).to_have_count(1)
        assert "very-secret-token" not in page.content()
        assert not watch.problems, watch.problems
