"""Every paged list (runs, one group of a run, the audit trail, notification deliveries) shows
the same pager (templates/_pager.html), whose links keep the list's filter on every page."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.models import Backend
from runs.actions import create_run
from runs.audit.trail import record
from runs.models import Notification, NotificationPreference
from runs.notify import views as notify_views
from runs.notify.outbox import enqueue
from runs.web import pages
from runs.web import views as web_views

pytestmark = pytest.mark.django_db
TASK = {"id": "a", "name": "a", "command": "true"}


def pager(client: Client, url: str) -> str:
    """The one pager of a page (or a partial), its text unescaped."""
    response = client.get(url)
    assert response.status_code == 200
    navs = re.findall(r'<nav class="pager">(.*?)</nav>', response.content.decode(), re.S)
    assert len(navs) == 1, f"{url} shows {len(navs)} pagers"
    return str(navs[0]).replace("&amp;", "&")


def pager_links(client: Client, url: str) -> dict[str, str]:
    """The pager's links, by their text."""
    links = re.findall(r'<a href="([^"]*)"[^>]*>\s*([^<]*?)\s*</a>', pager(client, url))
    return {text: href for href, text in links}


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_run_list_pages_newest_first(monkeypatch: pytest.MonkeyPatch, user: User, local_backend: Backend) -> None:
    monkeypatch.setattr(pages, "RUNS_PER_PAGE", 2)
    for n in range(5):
        create_run(owner=user, backend=local_backend, payload=[TASK], workflow_name=f"w{n}")
    client = signed_in(user)
    assert pager_links(client, "/runs") == {"older →": "?page=2"}
    assert pager_links(client, "/runs?page=2") == {"← newer": "?page=1", "older →": "?page=3"}


def test_a_groups_pages_keep_the_group(monkeypatch: pytest.MonkeyPatch, user: User, local_backend: Backend) -> None:
    monkeypatch.setattr(pages, "GROUP_PAGE_SIZE", 2)
    payload = [{"id": f"sim a.{n}", "name": "n", "command": "true"} for n in range(5)]
    run = create_run(owner=user, backend=local_backend, payload=payload, workflow_name="w")
    client = signed_in(user)
    # The page of one group: one pager (its table's own used to show a second one, linking nowhere).
    links = pager_links(client, f"/runs/{run.pk}?group=sim+a&page=2")
    assert links == {"← previous": "?group=sim+a&page=1", "next →": "?group=sim+a&page=3"}
    assert "rows 3–4 of 5 · page 2 of 3" in pager(client, f"/runs/{run.pk}?group=sim+a&page=2")
    # A group opened on the run's page loads its next rows in place.
    monkeypatch.setattr(pages, "GROUP_ROWS", 2)
    opened = pager(client, f"/runs/{run.pk}/group?group=sim+a")
    assert f'hx-get="/runs/{run.pk}/group?group=sim+a&page=2" hx-target="closest .group-body">next →' in opened


def test_the_audit_trail_pages_keep_the_action_filter(monkeypatch: pytest.MonkeyPatch, staff: User) -> None:
    monkeypatch.setattr(web_views, "AUDIT_PER_PAGE", 2)
    for n in range(5):
        record("run_created", f"run {n}", actor=staff)
    links = pager_links(signed_in(staff), "/audit?action=run_created&page=2")
    assert links == {"← newer": "?action=run_created&page=1", "older →": "?action=run_created&page=3"}


def test_the_deliveries_page_keeps_the_state_shown(monkeypatch: pytest.MonkeyPatch, user: User, staff: User) -> None:
    monkeypatch.setattr(notify_views, "PER_PAGE", 2)
    NotificationPreference.objects.update_or_create(user=user, defaults={"on": "always", "email": "u@example.org"})
    for n in range(5):
        enqueue(user=user, event="run.failed", subject="s", payload={}, dedupe_key=f"k{n}")
    Notification.objects.update(state=Notification.State.SENT)
    links = pager_links(signed_in(staff), "/notifications/failed?state=sent")
    assert links == {"older →": "?state=sent&page=2"}
