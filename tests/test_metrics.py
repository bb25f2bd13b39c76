"""``/metrics`` (issue 21: operators expect a Prometheus endpoint): who may scrape it, and
that what it reports follows a real run, real ticks and a real websocket."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from backends.models import Backend
from runs.actions import create_run
from runs.models import ApiToken, Run
from tests.asgi_server import asgi_server, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client, **headers: str) -> tuple[int, str]:
    response = client.get("/metrics", headers=headers)
    return response.status_code, response.content.decode()


def test_only_staff_a_staff_token_or_the_scrapers_token_may_scrape(
    client: Client, user: User, staff: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert scrape(client)[0] == 401  # anonymous: no redirect to a login page either
    client.force_login(user)
    assert scrape(client)[0] == 401
    client.logout()
    assert scrape(client, Authorization=f"Token {ApiToken.issue(user)}")[0] == 401
    assert scrape(client, Authorization=f"Token {ApiToken.issue(staff)}")[0] == 200
    assert scrape(client, Authorization="Bearer guess")[0] == 401  # no scraper token set: none works
    monkeypatch.setenv("SCRIPTHUT_METRICS_TOKEN", "scraper-secret-123")
    assert scrape(client, Authorization="Bearer guess")[0] == 401
    assert scrape(client, Authorization="Bearer scraper-secret-123")[0] == 200
    client.force_login(staff)
    status, text = scrape(client)
    assert status == 200 and "scripthut_tasks" in text


def test_tasks_ticks_and_polls_follow_a_real_run(
    client: Client, user: User, staff: User, local_backend: Backend, run_to_end: Callable[..., Run]
) -> None:
    client.force_login(staff)
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "name": f"t{i}", "command": "true"} for i in range(3)]
    run = create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="metered")
    before = samples(scrape(client)[1])
    assert before[("scripthut_tasks", (("backend", "local"), ("state", "pending")))] == 3
    assert ("scripthut_tick_seconds_count", (("backend", "local"),)) not in before  # never ticked

    run_to_end(run)
    after = samples(scrape(client)[1])
    ticks = after[("scripthut_tick_seconds_count", (("backend", "local"),))]
    assert ticks >= 1 and after[("scripthut_tick_seconds_sum", (("backend", "local"),))] > 0
    assert after[("scripthut_poll_seconds_count", (("backend", "local"),))] >= ticks
    assert after[("scripthut_submit_seconds_count", (("backend", "local"),))] >= 1
    assert after[("scripthut_tick_errors_total", (("backend", "local"),))] == 0
    assert after[("scripthut_backend_up", (("backend", "local"),))] == 1
    assert not any(name == "scripthut_tasks" for name, _ in after)  # nothing unfinished is left
    assert after[("scripthut_notifications_pending", ())] >= 0


def test_a_tick_that_cannot_reach_its_backend_counts_as_an_error(
    client: Client, staff: User, user: User, run_to_end: Callable[..., Run]
) -> None:
    from runs.engine.tick import tick_due_backends

    Backend.objects.create(name="gone", kind=Backend.Kind.LOCAL, settings={"run_as": "no-such-user-here"})
    tick_due_backends(force=True)
    client.force_login(staff)
    after = samples(scrape(client)[1])
    assert after[("scripthut_tick_errors_total", (("backend", "gone"),))] == 1
    assert after[("scripthut_backend_up", (("backend", "gone"),))] == 0


def test_open_websockets_are_counted(staff: User) -> None:
    from websockets.sync.client import connect

    def clients(base: str) -> float:
        request = urllib.request.Request(f"{base}/metrics", headers={"Cookie": session_cookie(staff)})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return samples(response.read().decode())[("scripthut_websocket_clients", ())]

    with asgi_server() as base:
        before = clients(base)
        headers = {"Origin": base, "Cookie": session_cookie(staff)}
        with connect(base.replace("http://", "ws://") + "/live", additional_headers=headers, open_timeout=10):
            assert clients(base) == before + 1
        deadline = time.monotonic() + 10
        while clients(base) != before:  # the server sees the close a moment later
            assert time.monotonic() < deadline, "the closed websocket is still counted"
            time.sleep(0.05)
