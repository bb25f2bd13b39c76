"""Cost: prices from instances.json (path, URL with a 24-hour cache), the formulas, waste,
costing when tasks end through the engine, and ``scripthut pricing``."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.costing import estimate, prices
from runs.costing.models import InstancePrice, PriceList
from runs.models import PortalSettings, Run, Task
from tests.threads import db_thread

FIXTURE = Path(__file__).parent / "fixtures" / "instances.json"
# 6 types priced in us-east-1 (one with on-demand only), 5 in eu-west-1; one broken entry skipped.
FIXTURE_ROWS = 11


def configure(source: str | Path | None = None, **pricing: Any) -> None:
    """The config's pricing block, as the importer stores it."""
    block = {"region": "us-east-1", "price_type": "ondemand", "partitions": {"normal": "c5.xlarge"}, "share": "max"}
    block |= {"source": str(source or FIXTURE)} | pricing
    PortalSettings.objects.update_or_create(pk=1, defaults={"pricing": block})


def task(**fields: Any) -> Task:
    values = {"partition": "normal", "cpus": 1, "memory": "1G", "elapsed_seconds": 3600.0, "state": "completed"}
    return Task(**(values | fields))


def cost(t: Task) -> tuple[Decimal | None, Decimal | None]:
    book = estimate.price_book()
    assert book is not None
    found = estimate.estimate(t, book)
    return (found.cost, found.waste) if found else (None, None)


# -- reading and storing prices ------------------------------------------------------------


@pytest.mark.django_db
def test_import_keeps_linux_prices_of_every_region() -> None:
    assert prices.import_file(FIXTURE) == FIXTURE_ROWS
    row = InstancePrice.objects.get(region="eu-west-1", instance_type="c5.xlarge")
    assert (row.vcpus, row.memory_gib, row.ondemand, row.spot_avg) == (4, 8.0, Decimal("0.192"), Decimal("0.08"))
    micro = InstancePrice.objects.get(region="us-east-1", instance_type="t3.micro")
    assert (micro.ondemand, micro.spot_avg) == (Decimal("0.0104"), None)  # "N/A" is no price
    stored = PriceList.load()
    assert stored.source == str(FIXTURE) and stored.prices_date is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"instance_type": "c5.xlarge"}', "expected a JSON array"),
        ('[{"instance_type": "c5.xlarge", "vCPU": 4, "memory": 8}]', "no instance type"),
    ],
)
def test_a_broken_file_changes_nothing(tmp_path: Path, content: str, problem: str) -> None:
    prices.import_file(FIXTURE)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(prices.PricingError, match=problem):
        prices.import_file(bad)
    assert InstancePrice.objects.count() == FIXTURE_ROWS
    assert PriceList.load().source == str(FIXTURE)


@pytest.mark.django_db
def test_path_source_is_read_again_only_when_the_file_changes(tmp_path: Path) -> None:
    source = tmp_path / "instances.json"
    shutil.copy(FIXTURE, source)
    configure(source)
    assert estimate.price_book(update=True) is not None
    first = PriceList.load().imported_at
    estimate.price_book(update=True)
    assert PriceList.load().imported_at == first  # unchanged file: not imported again

    data = json.loads(source.read_text())
    data[0]["pricing"]["us-east-1"]["linux"]["ondemand"] = "0.5"
    source.write_text(json.dumps(data))
    os.utime(source, (time.time() + 5, time.time() + 5))
    book = estimate.price_book(update=True)
    assert book is not None and book.rate("c5.xlarge") == estimate.Rate("c5.xlarge", 4, 8.0, Decimal("0.5"))


class PriceServer:
    """instances.json over HTTP on a loopback port of its own; counts requests; can fail."""

    def __init__(self, body: bytes) -> None:
        self.body, self.status, self.requests = body, 200, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                server.requests += 1
                self.send_response(server.status)
                self.send_header("Content-Length", str(len(server.body)))
                self.send_header("Last-Modified", "Sun, 29 Nov 2026 10:00:00 GMT")
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/instances.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def price_server() -> Iterator[PriceServer]:
    server = PriceServer(FIXTURE.read_bytes())
    yield server
    server.stop()


def age_cache(hours: float) -> None:
    """As if the cached copy had been fetched ``hours`` ago and the next check were due."""
    then = time.time() - hours * 3600
    os.utime(prices.cache_file(), (then, then))
    PriceList.objects.filter(pk=1).update(next_check_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.django_db
def test_url_source_is_fetched_once_a_day_and_keeps_the_last_good_copy(price_server: PriceServer) -> None:
    prices.cache_file().unlink(missing_ok=True)
    configure(price_server.url)
    assert estimate.price_book(update=True) is not None
    assert price_server.requests == 1
    assert prices.cache_file().read_bytes() == FIXTURE.read_bytes()
    assert f"{PriceList.load().prices_date:%Y-%m-%d %H:%M}" == "2026-11-29 10:00"  # the server's Last-Modified

    estimate.price_book(update=True)
    age_cache(23)  # due to be checked, but the copy is under 24 hours old
    estimate.price_book(update=True)
    assert price_server.requests == 1

    age_cache(25)
    price_server.body = b"<html>maintenance</html>"  # served with 200, but not prices
    book = estimate.price_book(update=True)
    assert price_server.requests == 2
    assert book is not None and book.rate("c5.xlarge") is not None  # the old prices stay
    assert prices.cache_file().read_bytes() == FIXTURE.read_bytes()  # and the last good copy
    assert "not JSON" in PriceList.load().last_error

    estimate.price_book(update=True)
    assert price_server.requests == 2  # a failure is retried an hour later, not every tick

    # A fresh database with the copy still fresh and the site down: the copy is imported.
    price_server.status = 503
    InstancePrice.objects.all().delete()
    PriceList.objects.all().delete()
    os.utime(prices.cache_file())
    assert estimate.price_book(update=True) is not None
    assert price_server.requests == 2
    assert InstancePrice.objects.count() == FIXTURE_ROWS


@pytest.mark.django_db
def test_unreachable_source_and_no_prices_means_no_cost() -> None:
    prices.cache_file().unlink(missing_ok=True)
    configure("http://127.0.0.1:9/instances.json")
    assert estimate.price_book(update=True) is None
    assert "cannot fetch" in PriceList.load().last_error
    configure("/nonexistent/instances.json")
    assert estimate.price_book(update=True) is None


# -- the formulas --------------------------------------------------------------------------


@pytest.mark.django_db
def test_share_is_the_larger_of_cpu_and_memory_unless_the_setting_says_cpu() -> None:
    prices.import_file(FIXTURE)  # c5.xlarge in us-east-1: 4 vCPUs, 8 GiB, $0.17/h on demand
    configure()
    assert cost(task(cpus=2, memory="2G")) == (Decimal("0.085"), None)  # CPU-bound: half the machine
    assert cost(task(cpus=1, memory="6G"))[0] == Decimal("0.1275")  # memory-bound: three quarters
    assert cost(task(cpus=1, memory="6G", elapsed_seconds=1800))[0] == Decimal("0.06375")
    configure(share="cpu")  # the original's formula
    assert cost(task(cpus=1, memory="6G"))[0] == Decimal("0.0425")
    configure(price_type="spot_avg", region="eu-west-1")
    assert cost(task(cpus=4, memory="1G"))[0] == Decimal("0.08")


@pytest.mark.django_db
def test_waste_is_what_was_asked_for_and_not_used() -> None:
    prices.import_file(FIXTURE)
    configure()
    # 2 CPUs used at 25 %, 4 GiB asked and 1 GiB used: it needed an eighth of the machine, paid half.
    lazy = task(cpus=2, memory="4G", cpu_efficiency=0.25, max_rss_mb=1024.0)
    assert cost(lazy) == (Decimal("0.085"), Decimal("0.06375"))
    busy = task(cpus=2, memory="4G", cpu_efficiency=1.0, max_rss_mb=1024.0)
    assert cost(busy) == (Decimal("0.085"), Decimal("0"))  # the CPUs set the share, and were used
    # memory-bound: 6 GiB asked (3/4 of the machine), 2 GiB used, CPU efficiency unknown.
    assert cost(task(cpus=1, memory="6G", max_rss_mb=2048.0)) == (Decimal("0.1275"), Decimal("0.085"))
    configure(share="cpu")
    assert cost(lazy) == (Decimal("0.085"), Decimal("0.06375"))
    assert cost(task(cpus=1, memory="6G", max_rss_mb=2048.0)) == (Decimal("0.0425"), Decimal("0"))


@pytest.mark.django_db
def test_an_ec2_task_pays_its_own_instance_from_launch_to_terminate() -> None:
    prices.import_file(FIXTURE)
    configure()
    launched = timezone.now() - timedelta(hours=3)
    ec2 = task(
        partition="unmapped",
        instance_type="m5.large",  # $0.096/h
        instance_launched_at=launched,
        instance_terminated_at=launched + timedelta(hours=2),
        elapsed_seconds=3600.0,
    )
    assert cost(ec2) == (Decimal("0.192"), None)
    ec2.instance_launched_at = None
    assert cost(ec2)[0] == Decimal("0.096")  # launch time unknown: the task's own time


@pytest.mark.django_db
def test_what_cannot_be_costed() -> None:
    prices.import_file(FIXTURE)
    configure(partitions={"normal": "c5.xlarge", "old": "x1.retired"})
    assert cost(task(partition="gpu")) == (None, None)  # not mapped
    assert cost(task(partition="old")) == (None, None)  # mapped to a type without a price
    assert cost(task(elapsed_seconds=None)) == (None, None)  # no timing
    configure(price_type="spot_avg")
    assert cost(task(partition="normal", instance_type="t3.micro")) == (None, None)  # no spot price
    PortalSettings.objects.filter(pk=1).update(pricing=None)
    assert estimate.price_book() is None


# -- through the engine --------------------------------------------------------------------

TASKS = [
    {"id": "a", "name": "A", "command": "sleep 0.3", "cpus": 2, "memory": "2G"},
    {"id": "b", "name": "B", "command": "sleep 0.3", "partition": "gpu", "deps": ["a"]},
    {"id": "c", "name": "C", "command": "exit 3", "deps": ["a"]},
    {"id": "d", "name": "D", "command": "true", "deps": ["c"]},
]


@pytest.mark.django_db(transaction=True)
def test_tasks_are_costed_when_they_end(user: Any, local_backend: Backend, run_to_end: Callable[..., Run]) -> None:
    prices.import_file(FIXTURE)
    configure()
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="w"))
    tasks = {t.task_id: t for t in run.tasks.all()}
    a = tasks["a"]
    assert a.elapsed_seconds and a.cost == Decimal(a.elapsed_seconds / 3600 * 0.5 * 0.17).quantize(Decimal("1e-6"))
    assert a.priced_with.startswith("c5.xlarge ondemand $0.17/h in us-east-1")
    assert tasks["b"].cost is None and tasks["b"].state == "completed"  # gpu is not mapped
    assert tasks["c"].cost is not None and tasks["c"].state == "failed"  # a failure costs too
    assert tasks["d"].cost is None and tasks["d"].state == "dep_failed"  # never ran


@pytest.mark.django_db
def test_recompute_costs_ended_tasks_again(user: Any, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=TASKS[:2], workflow_name="w")
    run.tasks.update(state="completed", elapsed_seconds=7200.0, finished_at=timezone.now())
    assert set(run.tasks.values_list("cost", flat=True)) == {None}
    prices.import_file(FIXTURE)
    configure(partitions={"normal": "c5.xlarge", "gpu": "p3.2xlarge"})
    call_command("pricing", "recompute", "--run", run.pk)
    costs = dict(run.tasks.values_list("task_id", "cost"))
    assert costs == {"a": Decimal("0.17"), "b": Decimal("0.765")}  # b: 2 h × 1/8 of a p3.2xlarge (8 vCPUs) × $3.06


@pytest.mark.django_db
def test_pricing_import_command(tmp_path: Path) -> None:
    call_command("pricing", "import", str(FIXTURE))
    assert InstancePrice.objects.count() == FIXTURE_ROWS
    with pytest.raises(CommandError, match="nothing imported: .*cannot read"):
        call_command("pricing", "import", str(tmp_path / "missing.json"))
    assert InstancePrice.objects.count() == FIXTURE_ROWS


@pytest.mark.django_db
def test_ec2_and_batch_backends_use_their_own_mappings(user: Any) -> None:
    prices.import_file(FIXTURE)
    configure(partitions={"normal": "c5.xlarge", "gpu-queue": "p3.2xlarge", "cheap-queue": "m5.large"})
    ec2 = Backend.objects.create(
        name="ec2", kind="ec2", settings={"instance_types": {"default": "m5.large", "big": "c5.2xlarge"}}
    )
    batch = Backend.objects.create(name="batch", kind="batch", settings={"aws": {"job_queue": "cheap-queue"}})

    def ended_on(backend: Backend, partition: str) -> Task:
        run = Run.objects.create(owner=user, backend=backend, workflow_name="w")
        return Task.objects.create(
            run=run, position=0, task_id="t", name="t", command="true", partition=partition, cpus=1, memory="1G",
            state="completed", elapsed_seconds=7200.0, finished_at=timezone.now(),
        )  # fmt: skip

    # EC2: the whole instance its partition maps to in the backend's instance_types (2 h).
    assert cost(ended_on(ec2, "big"))[0] == Decimal("0.68")  # c5.2xlarge $0.34/h
    assert cost(ended_on(ec2, "normal"))[0] == Decimal("0.192")  # default: m5.large $0.096/h
    # Batch: the queue's mapping; an unmapped partition went to the backend's job_queue.
    assert cost(ended_on(batch, "gpu-queue"))[0] == Decimal("0.765")  # 1/8 of a p3.2xlarge
    assert cost(ended_on(batch, "normal"))[0] == Decimal("0.085")  # normal is mapped: 1/4 of a c5.xlarge
    assert cost(ended_on(batch, "other"))[0] == Decimal("0.096")  # cheap-queue: m5.large, 1/2


@pytest.mark.django_db(transaction=True)
def test_one_process_refreshes_the_others_use_the_stored_prices(price_server: PriceServer) -> None:
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite runs one ticker and serializes writes)")
    prices.cache_file().unlink(missing_ok=True)
    configure(price_server.url)
    PriceList.load()
    holding, release = threading.Event(), threading.Event()

    def refresher() -> None:  # another process, in the middle of a refresh
        with transaction.atomic():
            PriceList.objects.select_for_update().get(pk=1)
            holding.set()
            release.wait(10)

    other = db_thread(refresher)
    assert holding.wait(10)
    started = time.monotonic()
    assert estimate.price_book(update=True) is None  # no prices yet, and no waiting for the lock
    assert time.monotonic() - started < 2 and price_server.requests == 0
    release.set()
    other.join()
    assert estimate.price_book(update=True) is not None and price_server.requests == 1


def test_pricing_block_problems_name_their_keys() -> None:
    from scripthut_site.config_schema import ConfigError, load_config

    spec = load_config(
        "pricing:\n  region: us-east-1\n  price_type: spot_avg\n  partitions:\n    standard: c5.xlarge\n"
    )
    assert spec.pricing is not None and (spec.pricing.share, spec.pricing.source) == ("max", None)
    with pytest.raises(ConfigError) as bad:
        load_config("pricing:\n  price_type: spot\n  share: memory\n  source: ''\n")
    lines = "\n".join(bad.value.errors)
    for key in ("pricing.price_type", "pricing.share", "pricing.source", "pricing.partitions"):
        assert key in lines, lines


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_while_running_is_costed(
    user: Any, local_backend: Backend, run_to_end: Callable[..., Run], time_machine: Any
) -> None:
    from runs.actions import cancel_run
    from runs.engine.tick import tick_due_backends

    prices.import_file(FIXTURE)
    configure()
    run = create_run(
        owner=user,
        backend=local_backend,
        payload=[{"id": "long", "name": "L", "command": "sleep 30", "memory": "1G"}],
        workflow_name="w",
    )
    deadline = time.monotonic() + 30
    while not run.tasks.filter(state="running").exists():
        assert time.monotonic() < deadline, "the task never started"
        tick_due_backends(force=True)
        time.sleep(0.2)
    time_machine.move_to(timezone.now() + timedelta(minutes=30), tick=True)  # the job has run for half an hour
    cancel_run(run)
    task = run_to_end(run).tasks.get()
    assert task.state == "cancelled" and task.started_at and task.finished_at, task
    hours = (task.finished_at - task.started_at).total_seconds() / 3600
    assert 0.5 <= hours < 0.6
    assert task.cost == Decimal(hours * 0.25 * 0.17).quantize(Decimal("1e-6")) and task.cost > 0  # 1 of 4 vCPUs


@pytest.mark.django_db
def test_an_ecs_fargate_task_is_priced_by_its_rounded_size(user: Any) -> None:
    """No instance prices needed: ``pricing.fargate`` alone prices Fargate tasks."""
    configure(fargate={"vcpu_hour": "0.04048", "gb_hour": "0.004445"})
    fargate = Backend.objects.create(name="fargate", kind="ecs", settings={"cluster": "c"})
    on_ec2 = Backend.objects.create(name="ecs-ec2", kind="ecs", settings={"cluster": "c", "launch_type": "EC2"})

    def ended_on(backend: Backend, **fields: Any) -> Task:
        run = Run.objects.create(owner=user, backend=backend, workflow_name="w")
        values = {"partition": "c", "cpus": 1, "memory": "1G", "state": "completed", "elapsed_seconds": 7200.0}
        return Task.objects.create(run=run, position=0, task_id="t", name="t", command="true", **(values | fields))

    book = estimate.price_book()
    assert book is not None
    # 1 CPU / 1 GiB runs as 1 vCPU / 2 GB (the least memory with 1 vCPU): 2 h x (0.04048 + 2 x 0.004445).
    found = estimate.estimate(ended_on(fargate), book)
    assert found is not None and found.cost == Decimal("0.09874")
    assert found.priced_with == "Fargate 1 vCPU / 2 GB at $0.04048/vCPU-h + $0.004445/GB-h"
    assert found.waste is None  # ECS reports no efficiency
    half = estimate.estimate(ended_on(fargate, cpu_efficiency=0.5), book)
    assert half is not None and half.waste == Decimal("0.04048")  # half a vCPU for 2 h
    assert estimate.estimate(ended_on(fargate, cpus=64), book) is None  # no Fargate size that big
    assert estimate.estimate(ended_on(on_ec2), book) is None  # EC2 launch type: by instance (none mapped)


def test_the_fargate_pricing_block_names_its_keys() -> None:
    from scripthut_site.config_schema import ConfigError, load_config

    spec = load_config("pricing:\n  partitions: {}\n  fargate: {vcpu_hour: 0.04048, gb_hour: 0.004445}\n")
    assert spec.pricing is not None and spec.pricing.fargate is not None
    assert spec.pricing.fargate.vcpu_hour == Decimal("0.04048")
    with pytest.raises(ConfigError) as bad:
        load_config("pricing:\n  partitions: {}\n  fargate: {vcpu_hour: -1}\n")
    assert bad.value.errors == [
        "pricing.fargate.vcpu_hour: input should be greater than 0",
        "pricing.fargate.gb_hour: field required",
    ]
