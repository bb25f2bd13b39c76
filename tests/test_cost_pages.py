"""Where cost shows (run header, task rows, API, /usage and its CSV), who sees whose, budgets
at 80 % and 100 %, and nothing at all when pricing is off or unreadable."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.costing import estimate, prices
from runs.costing.models import Budget, BudgetAlert
from runs.engine.finish import finish_tasks
from runs.models import ApiToken, PortalSettings, Run, Task
from runs.notify.models import Notification
from tests.test_cost import FIXTURE, configure

TEN = [{"id": f"sim.{i}", "name": f"S{i}", "command": "true", "cpus": 4, "memory": "1G"} for i in range(8)] + [
    {"id": "gpu.0", "name": "G", "command": "true", "partition": "gpu"},
    {"id": "report", "name": "R", "command": "true", "deps": ["sim.*"]},
]


def end_tasks(run: Run, task_ids: list[str], hours: float = 1.0, **fields: Any) -> list[Task]:
    """Have these tasks end through the engine's finish step (which costs them and checks budgets)."""
    Task.objects.filter(run=run, task_id__in=task_ids).update(state=Task.State.RUNNING, job_id="j")
    tasks = list(Task.objects.filter(run=run, task_id__in=task_ids))
    now = timezone.now()
    for task in tasks:
        task.state, task.exit_code, task.finished_at = Task.State.COMPLETED, 0, now
        task.started_at, task.elapsed_seconds = now - timedelta(hours=hours), hours * 3600
        for name, value in fields.items():
            setattr(task, name, value)
    return finish_tasks(tasks)


@pytest.fixture
def priced(db: None) -> None:
    prices.import_file(FIXTURE)  # c5.xlarge: 4 vCPUs, 8 GiB, $0.17/h on demand
    configure()


@pytest.fixture
def ten(user: User, local_backend: Backend, priced: None) -> Run:
    """8 tasks of 1 h on a whole c5.xlarge ($0.17 each), 1 on an unmapped partition, 1 not run."""
    run = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="ten")
    end_tasks(run, [f"sim.{i}" for i in range(8)], cpu_efficiency=0.5)
    end_tasks(run, ["gpu.0"])
    return run


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    # The CSRF token differs per render; the rest of the page must not.
    return re.sub(r'(csrfmiddlewaretoken" value=|X-CSRFToken": )"[^"]+"', "", response.content.decode())


# -- the run page and the API ----------------------------------------------------------------


def test_run_header_and_rows_show_cost_waste_and_the_prices_used(ten: Run, user: User) -> None:
    html = page(login(user), reverse("run_detail", args=[ten.pk]))
    header = html[html.index('id="run-cost"') : html.index('class="groups"')]
    assert "$1.36" in header  # 8 × $0.17
    assert "8/10 tasks costed" in header
    assert "waste $0.68 (50%)" in header  # each used half its CPUs: half the cost is waste
    dated = prices.PriceList.load().prices_date
    assert dated is not None and f"EC2 ondemand prices, us-east-1, of {dated:%Y-%m-%d}" in header
    assert ">Cost</th>" in html
    assert '<td class="num cost" title="c5.xlarge ondemand $0.17/h in us-east-1, share 1 (max)">$0.17' in html
    assert "waste $0.085</span>" in html


def test_api_has_cost_on_runs_and_tasks(ten: Run, user: User) -> None:
    client = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    detail = client.get(f"/api/runs/{ten.pk}").json()
    assert detail["cost"] | {"prices_date": None} == {
        "total_usd": 1.36,
        "waste_usd": 0.68,
        "costed_tasks": 8,
        "tasks": 10,
        "price_type": "ondemand",
        "region": "us-east-1",
        "prices_date": None,
    }
    tasks = {t["id"]: t for t in detail["tasks"]}
    assert (tasks["sim.0"]["cost"], tasks["sim.0"]["waste_cost"]) == (0.17, 0.085)
    assert (tasks["gpu.0"]["cost"], tasks["report"]["cost"]) == (None, None)
    listed = client.get("/api/runs").json()["items"][0]
    assert listed["cost"]["total_usd"] == 1.36 and listed["cost"]["costed_tasks"] == 8


@pytest.mark.parametrize("pricing", ["absent", "unreadable"])
def test_without_readable_pricing_no_cost_shows_and_nothing_else_changes(
    user: User, local_backend: Backend, pricing: str, time_machine: Any
) -> None:
    # The pages are compared as rendered: "created 10 seconds ago" must not become "12 seconds
    # ago" on a slow machine (it did, once in six runs), so the clock stands still.
    time_machine.move_to(timezone.now(), tick=False)
    run = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="ten")
    end_tasks(run, [f"sim.{i}" for i in range(8)], cpu_efficiency=0.5)
    client = login(user)
    urls = [reverse("run_detail", args=[run.pk]), reverse("run_items", args=[run.pk]), reverse("run_list")]
    before = [page(client, url) for url in urls]
    # Costs stored earlier (prices imported, then the pricing block removed or its file gone).
    prices.import_file(FIXTURE)
    configure()
    estimate.recompute(run.tasks.all())
    assert run.tasks.filter(cost__isnull=False).count() == 8
    if pricing == "absent":
        PortalSettings.objects.filter(pk=1).update(pricing=None)
    else:
        prices.InstancePrice.objects.all().delete()
        prices.PriceList.objects.all().delete()
        configure("/nonexistent/instances.json")
        assert estimate.price_book(update=True) is None
    assert [page(client, url) for url in urls] == before
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    detail = api.get(f"/api/runs/{run.pk}").json()
    assert detail["cost"] is None and {t["cost"] for t in detail["tasks"]} == {None}
    usage = page(client, reverse("usage"))
    assert "estimated cost" not in usage and "Costs are not shown" in usage and "CPU-hours" in usage
    Budget.objects.create(user=user, monthly_usd=Decimal("1"))  # $1.36 spent: over, but not shown or told
    assert 'id="budgets"' not in page(client, reverse("usage"))
    create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="again")
    assert not BudgetAlert.objects.exists()


# -- /usage --------------------------------------------------------------------------------


@pytest.fixture
def two_users(ten: Run, bob: User, local_backend: Backend) -> Run:
    """alice's ten-task run, and bob's run on a backend of his own: 2 tasks of 2 h."""
    other = Backend.objects.create(name="bobs-cluster", kind=Backend.Kind.LOCAL, max_concurrent=2)
    other.allowed_groups.add(*bob.groups.all())
    run = create_run(owner=bob, backend=other, payload=TEN[:2], workflow_name="bobs")
    end_tasks(run, ["sim.0", "sim.1"], hours=2)
    return run


def test_usage_page_staff_see_everyone_a_user_their_own(two_users: Run, user: User, staff: User) -> None:
    mine = page(login(user), reverse("usage"))
    assert "your tasks" in mine and "bobs-cluster" not in mine and "Per user" not in mine
    assert re.search(r'id="usage-total-cost">\$1\.36<', mine)
    assert "8 of 9 tasks costed" in mine  # the 10th never ended
    everyone = page(login(staff), reverse("usage"))
    assert "everyone's tasks" in everyone and "Per user" in everyone
    assert re.search(r'id="usage-total-cost">\$2\.04<', everyone)  # + bob's 2 × 2 h × $0.17
    by_user = everyone[everyone.index('id="usage-by-user"') : everyone.index('id="usage-by-backend"')]
    assert by_user.index(">alice<") < by_user.index(">bob<")  # the largest cost first
    assert "bobs-cluster" in everyone and f"{timezone.now():%Y-%m}" in everyone


def test_usage_csv_per_month_user_and_backend(two_users: Run, user: User, staff: User) -> None:
    response = login(staff).get(reverse("usage_csv"), {"months": "3"})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    month = f"{timezone.now():%Y-%m}"
    assert [(r["month"], r["user"], r["backend"], r["tasks"], r["costed_tasks"]) for r in rows] == [
        (month, "alice", "local", "9", "8"),
        (month, "bob", "bobs-cluster", "2", "2"),
    ]
    assert (Decimal(rows[0]["cost_usd"]), Decimal(rows[0]["waste_usd"])) == (Decimal("1.36"), Decimal("0.68"))
    assert (float(rows[0]["cpu_hours"]), float(rows[1]["cpu_hours"])) == (8 * 4 + 1, 2 * 2 * 4)
    own = list(csv.DictReader(io.StringIO(login(user).get(reverse("usage_csv")).content.decode())))
    assert [r["user"] for r in own] == ["alice"]


@pytest.mark.parametrize("months", ["0", "-1", "abc", "²", "121", "99999"])
def test_usage_bad_period_is_400(user: User, months: str) -> None:
    for name in ("usage", "usage_csv"):
        response = login(user).get(reverse(name), {"months": months})
        assert response.status_code == 400 and b"months must be" in response.content


def test_usage_needs_a_login(db: None) -> None:
    response = Client().get(reverse("usage"))
    assert response.status_code == 302 and "login" in response["Location"]


# -- budgets -------------------------------------------------------------------------------


def test_budget_owner_told_at_80_and_100_percent_once_each(user: User, local_backend: Backend, priced: None) -> None:
    budget = Budget.objects.create(user=user, monthly_usd=Decimal("1.70"))  # ten task-hours at $0.17
    run = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="ten")
    end_tasks(run, ["sim.0", "sim.1", "sim.2", "sim.3", "sim.4", "sim.5", "sim.6"])  # 70 %
    assert not BudgetAlert.objects.exists()
    end_tasks(run, ["sim.7"])  # 80 %
    assert list(BudgetAlert.objects.values_list("threshold", "spent_usd")) == [(80, Decimal("1.36"))]
    again = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="again")
    end_tasks(again, ["sim.0"])  # 90 %: nothing new
    assert BudgetAlert.objects.count() == 1
    end_tasks(again, ["sim.1", "sim.2"])  # 110 %
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [80, 100]
    # Beyond the budget a run still starts, and nobody is told twice.
    third = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="third")
    end_tasks(third, ["sim.0"])
    assert third.status == "pending" and BudgetAlert.objects.count() == 2
    assert set(BudgetAlert.objects.values_list("budget", "user")) == {(budget.pk, user.pk)}


def test_group_budget_counts_its_members_and_tells_each_owner(
    user: User, bob: User, local_backend: Backend, priced: None
) -> None:
    lab = Group.objects.create(name="lab")
    lab.user_set.add(user, bob)
    Budget.objects.create(group=lab, monthly_usd=Decimal("1.00"))
    alices = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="a")
    end_tasks(alices, ["sim.0", "sim.1", "sim.2", "sim.3", "sim.4"])  # $0.85: 85 %
    assert list(BudgetAlert.objects.values_list("user__username", "threshold")) == [("alice", 80)]
    # bob's run starts with the group already at 85 %: he is told at creation.
    create_run(owner=bob, backend=local_backend, payload=TEN, workflow_name="b")
    assert sorted(BudgetAlert.objects.values_list("user__username", "threshold")) == [("alice", 80), ("bob", 80)]
    usage = page(login(bob), reverse("usage"))
    assert "group lab" in usage and "$0.85</strong> of $1.00 (85%)" in usage and 'class="fill near"' in usage


def test_budget_alerts_go_through_the_notify_outbox(user: User, local_backend: Backend, priced: None) -> None:
    user.email = "alice@example.org"
    user.save()
    budget = Budget.objects.create(user=user, monthly_usd=Decimal("0.10"))
    run = create_run(owner=user, backend=local_backend, payload=TEN, workflow_name="ten")
    end_tasks(run, ["sim.0"])  # $0.17: past both thresholds at once
    end_tasks(run, ["sim.1"])
    sent = Notification.objects.filter(event="budget").order_by("dedupe_key")
    month = f"{timezone.now():%Y-%m}"
    assert [n.dedupe_key for n in sent] == [f"budget:{budget.pk}:user:{user.pk}:{month}:{t}" for t in (100, 80)]
    assert {(n.channel, n.target, n.run_id) for n in sent} == {("email", "alice@example.org", None)}
    assert sent[0].subject == f"alice's budget: 100% reached in {timezone.now():%B %Y}"
    assert sent[0].payload | {"budget_id": 0} == {
        "budget_id": 0,
        "for": "alice",
        "month": month,
        "threshold_percent": 100,
        "spent_usd": "0.17",
        "budget_usd": "0.10",
        "run_id": None,
    }


def test_budgets_are_set_in_the_admin(user: User, staff: User) -> None:
    staff.is_superuser = True
    staff.save()
    admin = login(staff)
    lab = Group.objects.create(name="lab")
    both = admin.post("/admin/runs/budget/add/", {"user": user.pk, "group": lab.pk, "monthly_usd": "100"})
    assert both.status_code == 200 and b"one user or one group: choose exactly one" in both.content
    negative = admin.post("/admin/runs/budget/add/", {"user": user.pk, "monthly_usd": "-5"})
    assert negative.status_code == 200 and b"must be more than 0" in negative.content
    assert not Budget.objects.exists()
    created = admin.post("/admin/runs/budget/add/", {"group": lab.pk, "monthly_usd": "100"})
    assert created.status_code == 302 and Budget.objects.get().group == lab
    listing = admin.get("/admin/runs/budget/")
    assert listing.status_code == 200 and b"group lab: $100.00/month" in listing.content
    assert admin.get("/admin/runs/pricelist/").status_code == 200
