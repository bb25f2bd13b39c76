"""Cost in a real browser: a 1,000-task run's header and rows, and the usage page with budgets,
under the portal's Content-Security-Policy (screenshots with SCRIPTHUT_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.costing import estimate, prices
from runs.costing.models import Budget
from runs.engine.run_status import refresh_run_status
from runs.models import PortalSettings, Run, Task
from tests.browser import SCREENSHOT_DIR, PolicyWatch, chromium_available, launch, login, playwright_api, screenshot
from tests.test_cost import FIXTURE, configure

pytestmark = [pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing"), pytest.mark.browser]


def thousand_tasks() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = [{"id": "prep", "name": "Prepare", "command": "true", "cpus": 2, "memory": "4G"}]
    tasks += [
        {"id": f"sim.{i}", "name": f"Simulation {i}", "command": "true", "cpus": 1 + i % 4, "memory": f"{1 + i % 6}G"}
        for i in range(960)
    ]
    tasks += [{"id": f"gpu.{i}", "name": f"Train {i}", "command": "true", "partition": "gpu"} for i in range(30)]
    tasks += [{"id": f"report.{i}", "name": "Report", "command": "true"} for i in range(9)]
    return tasks


def ended(run: Run, finished_days_ago: float = 0, seed: int = 1) -> None:
    """Most tasks ended with varied times and efficiency; 20 failed, the 9 reports pending."""
    rng = random.Random(seed)
    now = timezone.now() - timedelta(days=finished_days_ago)
    tasks = list(run.tasks.exclude(task_id__startswith="report"))
    for index, task in enumerate(tasks):
        hours = rng.uniform(0.2, 3.0)
        task.state = Task.State.FAILED if index % 50 == 7 else Task.State.COMPLETED
        task.exit_code = 1 if task.state == Task.State.FAILED else 0
        task.started_at, task.finished_at = now - timedelta(hours=hours), now
        task.elapsed_seconds = hours * 3600
        task.cpu_efficiency = rng.uniform(0.15, 0.98)
        task.max_rss_mb = rng.uniform(0.1, 0.95) * 1024
    Task.objects.bulk_update(
        tasks,
        ["state", "exit_code", "started_at", "finished_at", "elapsed_seconds", "cpu_efficiency", "max_rss_mb"],
        batch_size=500,
    )
    estimate.recompute(run.tasks.all())
    refresh_run_status(run.pk)


def test_run_header_and_usage_page_in_a_browser(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server's threads must not keep their connections, or PostgreSQL refuses to
    # drop the test database ("being accessed by other users").
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    researchers = Group.objects.create(name="researchers")
    alice = User.objects.create_user("alice", password="pw-alice-123")
    bob = User.objects.create_user("bob", password="pw-bob-12345")
    User.objects.create_user("carol", password="pw-carol-123", is_staff=True)
    researchers.user_set.add(alice, bob)
    cluster = Backend.objects.create(name="hpc", kind=Backend.Kind.LOCAL, max_concurrent=4)
    cloud = Backend.objects.create(name="aws-batch", kind=Backend.Kind.LOCAL, max_concurrent=4)
    for backend in (cluster, cloud):
        backend.allowed_groups.add(researchers)
    prices.import_file(FIXTURE)
    configure(price_type="spot_avg", partitions={"normal": "c5.xlarge", "gpu": "p3.2xlarge"})

    big = create_run(owner=alice, backend=cluster, payload=thousand_tasks(), workflow_name="parameter-sweep")
    ended(big)
    Task.objects.filter(run=big, task_id__startswith="gpu.").update(cost=None, waste_cost=None, priced_with="")
    for days, owner, backend in ((35, alice, cloud), (70, bob, cluster), (3, bob, cloud)):
        ended(create_run(owner=owner, backend=backend, payload=thousand_tasks()[:200], workflow_name="w"), days, days)
    Budget.objects.create(user=alice, monthly_usd=Decimal("250"))
    Budget.objects.create(group=researchers, monthly_usd=Decimal("300"))
    total = big.tasks.exclude(cost=None).count()
    months = {days: f"{timezone.now() - timedelta(days=days):%Y-%m}" for days in (0, 3, 35, 70)}
    hers, everyone = {months[0], months[35]}, set(months.values())
    base = live_server.url

    with playwright_api() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(20_000)
        watch = PolicyWatch(context, base)
        page = context.new_page()
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{big.pk}")
        header = page.locator("#run-cost")
        expect(header).to_contain_text(f"{total}/1000 tasks costed")
        expect(header).to_contain_text("EC2 spot_avg prices, us-east-1")
        expect(header.locator(".cost-waste")).to_be_visible()
        # A 1,000-task run opens with its groups closed: a group's rows (with their cost) load when opened.
        page.locator("details.group summary", has_text="sim").first.click()
        expect(page.locator("td.cost").first).to_contain_text("$")
        screenshot(page, "cost-01-run-page")
        if os.environ.get("SCRIPTHUT_SCREENSHOTS"):  # the header as it first appears, not the whole 1,000 rows
            page.screenshot(path=str(SCREENSHOT_DIR / "cost-01-run-header.png"))
        page.goto(f"{base}/usage")
        expect(page.locator("#budgets")).to_contain_text("group researchers")
        expect(page.locator("#usage-by-month tbody tr")).to_have_count(len(hers))  # only her tasks
        screenshot(page, "cost-02-usage-alice")

        staff_page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        login(staff_page, base, "carol", "pw-carol-123")
        staff_page.goto(f"{base}/usage")
        expect(staff_page.locator("#usage-by-user tbody tr")).to_have_count(2)
        expect(staff_page.locator("#usage-by-month tbody tr")).to_have_count(len(everyone))
        expect(staff_page.locator("#usage-by-backend")).to_contain_text("aws-batch")
        screenshot(staff_page, "cost-03-usage-staff")
        PortalSettings.objects.filter(pk=1).update(pricing=None)  # pricing removed: CPU-hours only
        staff_page.goto(f"{base}/usage")
        expect(staff_page.get_by_text("Costs are not shown")).to_be_visible()
        expect(staff_page.locator("#usage-by-user svg.hbar")).to_have_count(2)
        expect(staff_page.locator("#usage-total-cost")).to_have_count(0)
        expect(staff_page.locator("#budgets")).to_have_count(0)  # budgets are in dollars: not shown either
        screenshot(staff_page, "cost-04-usage-without-pricing")
        staff_page.goto(f"{base}/runs/{big.pk}")
        expect(staff_page.locator("#run-cost")).to_have_count(0)
        staff_page.goto("about:blank")  # the run page polls: no request left in flight at teardown
        browser.close()
    assert watch.problems == []
