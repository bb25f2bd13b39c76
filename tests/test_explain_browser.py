"""Pages that explain (issue 21, findings 5-8 and 11), read in Chromium as a user would.

Screenshots go under ``screenshots/`` with ``SCRIPTHUT_SCREENSHOTS=1``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User

from backends.models import Backend
from runs.models import Run, Task
from tests.browser import chromium_available, login, screenshot
from tests.conftest import local_user
from tests.test_page_defects import portal, start, task_row, wait_until_settled  # noqa: F401  (portal: a fixture)

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.browser,
]

# Whether an element is drawn whole: inside every ancestor that clips, and on top at its centre.
DRAWN_WHOLE = """link => {
  const r = link.getBoundingClientRect();
  for (let box = link.parentElement; box; box = box.parentElement) {
    const style = getComputedStyle(box);
    if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
    const b = box.getBoundingClientRect();
    if (r.left < b.left - 0.5 || r.right > b.right + 0.5) return `clipped by ${box.tagName}.${box.className}`;
  }
  if (r.right > document.documentElement.clientWidth) return 'beyond the window';
  return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === link ? '' : 'covered';
}"""


def test_a_tasks_files_links_are_whole_at_every_common_width(
    portal: tuple[Any, str],  # noqa: F811
    user: User,
    local_backend: Backend,
) -> None:
    """Finding 7: the run page clipped the task's "error" link to "err" at 1280-1920 px."""
    from playwright.sync_api import expect

    page, base = portal
    run = start(user, local_backend, [{"id": "done", "name": "Done", "command": "true"}])
    wait_until_settled(run)
    page.goto(f"{base}/runs/{run.pk}")
    for width in (1280, 1366, 1440, 1536, 1600, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        links = task_row(page, "done").locator("td.links a")
        expect(links).to_have_text(["script", "output", "error"])
        for index in range(3):
            problem = links.nth(index).evaluate(DRAWN_WHOLE)
            assert problem == "", f"at {width} px the {links.nth(index).inner_text()!r} link is {problem}"
        if width in (1280, 1920):
            screenshot(page, f"explain-7-links-at-{width}")


def test_another_users_run_is_a_styled_not_found_page(portal: tuple[Any, str], user: User, bob: User) -> None:  # noqa: F811
    """Finding 6: Django's bare "Not Found" became a page like the 403 one."""
    from playwright.sync_api import expect

    page, base = portal
    run = start(user, Backend.objects.get(name="local"), [{"id": "a", "name": "A", "command": "true"}])
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[union-attr]
    page = other.new_page()
    login(page, base, "bob", "pw-bob-12345")
    response = page.goto(f"{base}/runs/{run.pk}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator(".alert.error")).to_contain_text(f"/runs/{run.pk}, or it is not yours to see")
    expect(page.locator("nav.mainnav")).to_be_visible()  # the portal's own frame, signed in
    assert page.locator(".alert.error").evaluate("e => getComputedStyle(e).borderLeftWidth") == "4px"
    screenshot(page, "explain-6-not-found")
    other.close()


def test_a_user_without_backend_access_is_told_whom_to_ask(portal: tuple[Any, str], local_backend: Backend) -> None:  # noqa: F811
    """Finding 5: "No backends configured." and "Start one from Workflows" were dead ends."""
    from playwright.sync_api import expect

    page, base = portal
    User.objects.create_user("root-admin", email="ops@example.org", password="pw-ops-123456", is_staff=True)
    newcomer = local_user("dave", "pw-dave-12345")
    newcomer.groups.clear()  # in no group the backend is shared with
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[union-attr]
    page = other.new_page()
    login(page, base, "dave", "pw-dave-12345")
    said = "You have no access to any backend yet. This portal has 1 backend"
    expect(page.locator(".no-access")).to_contain_text(said)
    expect(page.locator(".no-access")).to_contain_text("Ask ops@example.org to give you access.")
    expect(page.locator(".no-access a[href='mailto:ops@example.org']")).to_be_visible()
    expect(page.get_by_text("No backends configured.")).to_have_count(0)
    expect(page.get_by_text("Start one from")).to_have_count(0)
    screenshot(page, "explain-5-no-access-dashboard")
    for path in ("/workflows", "/runs"):
        page.goto(f"{base}{path}")
        expect(page.locator(".no-access")).to_contain_text(said)
    screenshot(page, "explain-5-no-access-runs")
    other.close()


def test_timeline_ticks_are_at_round_times(portal: tuple[Any, str], user: User, local_backend: Backend) -> None:  # noqa: F811
    """Finding 8: ticks at span/5 read "0s 1s 2s 2s 3s 4s"."""
    from playwright.sync_api import expect

    page, base = portal
    run = start(user, local_backend, [{"id": f"t{i}", "name": "T", "command": "true"} for i in range(3)])
    wait_until_settled(run)
    # A span of 4.5 s, as in the finding.
    started = Task.objects.filter(run=run).order_by("submitted_at").first()
    assert started is not None and started.submitted_at
    t0 = started.submitted_at
    Task.objects.filter(run=run).update(submitted_at=t0, started_at=t0, finished_at=t0 + timedelta(seconds=4.5))
    Run.objects.filter(pk=run.pk).update(finished_at=t0 + timedelta(seconds=4.5))
    page.goto(f"{base}/runs/{run.pk}")
    ticks = page.locator(".tl-axis .tl-tick")
    expect(ticks).to_have_text(["0s", "1s", "2s", "3s", "4s"])
    screenshot(page, "explain-8-timeline-ticks")


def test_cancelled_run_and_short_tasks_read_right(portal: tuple[Any, str], user: User, local_backend: Backend) -> None:  # noqa: F811
    """Finding 11: "Relaunch failed" on a cancelled run; "0.0" CPU-hours for short tasks."""
    from playwright.sync_api import expect

    page, base = portal
    run = start(
        user,
        local_backend,
        [{"id": "quick", "name": "Quick", "command": "true"}, {"id": "slow", "name": "Slow", "command": "sleep 60"}],
    )
    page.goto(f"{base}/runs/{run.pk}")
    expect(task_row(page, "slow").locator(".badge.st-running")).to_be_visible(timeout=30_000)
    page.click("button:has-text('Cancel run')")
    wait_until_settled(run)
    page.reload()
    expect(page.locator("button:has-text('Relaunch unsuccessful tasks')")).to_be_visible()
    expect(page.get_by_text("Relaunch failed")).to_have_count(0)
    screenshot(page, "explain-11-cancelled-run")
    page.goto(f"{base}/usage")
    total = page.locator("#usage-total-hours")
    expect(total).not_to_have_text("0.0")  # a second of CPU is not nothing
    assert total.inner_text() not in ("0", "0.0", "") and total.inner_text().lstrip("<").startswith("0.0")
    screenshot(page, "explain-11-usage")
