"""A task's cost and waste, from the configured prices.

Cost (the original's formula, with a better default share)::

    cost = hours × share × price_per_hour
    share = max(cpus / instance_vcpus, memory / instance_memory)   # pricing.share: max (default)
    share = cpus / instance_vcpus                                   # pricing.share: cpu (the original)

``hours`` is the task's elapsed time. An EC2 backend task had an instance to itself:
share 1, its own instance type, and hours from launch to terminate when known. Other
tasks are priced as the instance type their partition (a Batch task: its queue) maps to.
An ECS task on Fargate, when ``pricing.fargate`` is set, is priced by its size (rounded up
to a valid Fargate size, as it was run): ``hours × (vCPUs × vcpu_hour + GB × gb_hour)``.

Waste is the part of that cost paid for what was asked for and not used: the cost minus
what the task would have cost had it asked for only what it used, i.e. its CPUs times its
CPU efficiency and its peak memory. It needs efficiency data (either figure; the other is
taken as fully used) and is never more than the cost. An EC2 task paid for its whole
instance, so what its request left idle counts as waste too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from backends.ecs.sizes import fargate_size
from backends.registry import BACKENDS, settings_class
from backends.schema import BackendSettings
from runs.costing.efficiency import requested_mb
from runs.costing.models import InstancePrice, PriceList
from runs.costing.prices import refresh
from runs.models import PortalSettings, Run, Task

COST_FIELDS = ["cost", "waste_cost", "priced_with"]
CENT_FRACTIONS = Decimal("0.000001")
MB_PER_GIB = 1024


@dataclass(frozen=True)
class Rate:
    instance_type: str
    vcpus: int
    memory_gib: float
    per_hour: Decimal


@dataclass
class PriceBook:
    """The configured pricing with the stored prices of its region."""

    region: str
    price_type: str
    share: str  # "max" or "cpu"
    partitions: dict[str, str]
    prices_date: datetime | None
    fargate: tuple[Decimal, Decimal] | None = None  # USD per vCPU-hour, per GB-hour
    _rates: dict[str, Rate | None] = field(default_factory=dict)
    _backends: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # run id -> kind, settings

    def backend_of(self, run_id: str) -> tuple[str, dict[str, Any]]:
        if run_id not in self._backends:
            found = Run.objects.filter(pk=run_id).values_list("backend__kind", "backend__settings").first()
            self._backends[run_id] = (found[0], found[1] or {}) if found else ("", {})
        return self._backends[run_id]

    def rate(self, instance_type: str) -> Rate | None:
        if instance_type not in self._rates:
            self._load([instance_type])
        return self._rates[instance_type]

    def _load(self, instance_types: Iterable[str]) -> None:
        wanted = set(instance_types) - set(self._rates)
        self._rates.update(dict.fromkeys(wanted))
        for row in InstancePrice.objects.filter(region=self.region, instance_type__in=wanted):
            price = getattr(row, self.price_type)
            if price is not None:
                self._rates[row.instance_type] = Rate(row.instance_type, row.vcpus, row.memory_gib, price)


def price_book(*, update: bool = False) -> PriceBook | None:
    """The prices to cost tasks with; None when pricing is not configured or no prices are stored.

    ``update``: first refresh the stored prices from the source if due (the engine does;
    pages only read).
    """
    # One query, and no row created: pages call this on every render.
    pricing: dict[str, Any] | None = PortalSettings.objects.filter(pk=1).values_list("pricing", flat=True).first()
    if not pricing:
        return None
    if update:
        refresh(pricing)
    prices = PriceList.objects.filter(pk=1).first()
    fargate = pricing.get("fargate")
    if (prices is None or prices.imported_at is None) and not fargate:
        return None
    book = PriceBook(
        region=pricing.get("region", "us-east-1"),
        price_type=pricing.get("price_type", "ondemand"),
        share=pricing.get("share", "max"),
        partitions=dict(pricing.get("partitions") or {}),
        prices_date=prices.prices_date if prices else None,
        fargate=(Decimal(str(fargate["vcpu_hour"])), Decimal(str(fargate["gb_hour"]))) if fargate else None,
    )
    book._load(book.partitions.values())
    return book


# -- the formulas ------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    cost: Decimal
    waste: Decimal | None
    priced_with: str


def instance_of(task: Task, book: PriceBook) -> tuple[Rate | None, bool]:
    """The instance type the task is priced as, and whether it had the whole instance.

    The type it ran on alone, where the backend recorded one (EC2); else what its
    backend's settings model says (``priced_as``): by default its partition's mapping in
    ``pricing.partitions``; an EC2 task the type its partition maps to in the backend's
    ``instance_types``; a Batch task falls back to its ``aws.job_queue``'s mapping.
    """
    if task.instance_type:
        return book.rate(task.instance_type), True
    kind, settings = book.backend_of(task.run_id)
    # Each backend's settings model says how its tasks are priced (backends/schema.py).
    model = settings_class(kind) if kind in BACKENDS else BackendSettings
    instance, whole_instance = model.priced_as(settings, task.partition, book.partitions)
    return (book.rate(instance) if instance else None), whole_instance


def hours_of(task: Task, whole_instance: bool) -> float | None:
    if whole_instance and task.instance_launched_at and task.instance_terminated_at:
        return max(0.0, (task.instance_terminated_at - task.instance_launched_at).total_seconds() / 3600)
    seconds = task.elapsed_seconds
    if seconds is None and task.started_at and task.finished_at:
        seconds = (task.finished_at - task.started_at).total_seconds()
    return None if seconds is None else max(0.0, seconds / 3600)


def share_of(cpus: float, memory_mb: float | None, rate: Rate, mode: str) -> float:
    """The part of the instance a task with these resources occupies."""
    cpu_share = cpus / rate.vcpus
    if mode == "cpu" or memory_mb is None:
        return cpu_share
    return max(cpu_share, memory_mb / (rate.memory_gib * MB_PER_GIB))


def used_share_of(task: Task, rate: Rate, mode: str) -> float | None:
    """The share the task would have occupied had it asked for only what it used."""
    if task.cpu_efficiency is None and task.max_rss_mb is None:
        return None
    asked_mb = requested_mb(task.memory)
    used_cpus = task.cpus * min(1.0, task.cpu_efficiency) if task.cpu_efficiency is not None else task.cpus
    used_mb = min(task.max_rss_mb, asked_mb) if task.max_rss_mb is not None and asked_mb else asked_mb
    return share_of(used_cpus, used_mb, rate, mode)


def on_fargate(task: Task, book: PriceBook) -> bool:
    kind, settings = book.backend_of(task.run_id)
    return book.fargate is not None and kind == "ecs" and settings.get("launch_type", "FARGATE") == "FARGATE"


def fargate_estimate(task: Task, book: PriceBook) -> Estimate | None:
    """An ECS Fargate task: its (rounded) size times the per-vCPU-hour and per-GB-hour prices."""
    hours = hours_of(task, False)
    asked_mb = requested_mb(task.memory)
    if hours is None or asked_mb is None or book.fargate is None:
        return None
    try:
        size = fargate_size(task.cpus, int(asked_mb))
    except ValueError:
        return None
    vcpu_hour, gb_hour = book.fargate
    vcpus, gb = size.cpu / 1024, size.memory / MB_PER_GIB
    cost = hours * (vcpus * float(vcpu_hour) + gb * float(gb_hour))
    waste = None
    if task.cpu_efficiency is not None or task.max_rss_mb is not None:
        used_vcpus = task.cpus * min(1.0, task.cpu_efficiency) if task.cpu_efficiency is not None else vcpus
        used_gb = min(task.max_rss_mb, size.memory) / MB_PER_GIB if task.max_rss_mb is not None else gb
        waste = max(0.0, cost - hours * (used_vcpus * float(vcpu_hour) + used_gb * float(gb_hour)))
    priced_with = (
        f"Fargate {vcpus:g} vCPU / {gb:g} GB at ${vcpu_hour.normalize():f}/vCPU-h + ${gb_hour.normalize():f}/GB-h"
    )
    return Estimate(_money(cost), None if waste is None else _money(waste), priced_with)


def estimate(task: Task, book: PriceBook) -> Estimate | None:
    """The task's cost and waste; None if it cannot be costed (no timing, unmapped partition)."""
    if on_fargate(task, book):
        return fargate_estimate(task, book)
    rate, whole = instance_of(task, book)
    hours = hours_of(task, whole)
    if rate is None or hours is None:
        return None
    per_hour = float(rate.per_hour)
    share = 1.0 if whole else share_of(task.cpus, requested_mb(task.memory), rate, book.share)
    cost = hours * share * per_hour
    used = used_share_of(task, rate, book.share)
    waste = None if used is None else hours * (share - min(used, share)) * per_hour
    priced_with = f"{rate.instance_type} {book.price_type} ${rate.per_hour.normalize():f}/h in {book.region}"
    if not whole:
        priced_with += f", share {share:.3g} ({book.share})"
    return Estimate(_money(cost), None if waste is None else _money(waste), priced_with)


def _money(amount: float) -> Decimal:
    return Decimal(repr(amount)).quantize(CENT_FRACTIONS)


def apply(tasks: Iterable[Task], book: PriceBook | None) -> list[Task]:
    """Set each task's cost fields (cleared when it cannot be costed); the caller saves them."""
    done = []
    for task in tasks:
        found = estimate(task, book) if book is not None else None
        task.cost = found.cost if found else None
        task.waste_cost = found.waste if found else None
        task.priced_with = found.priced_with if found else ""
        done.append(task)
    return done


PRICING_INPUTS = (
    "id",
    "run_id",
    "state",
    "partition",
    "cpus",
    "memory",
    "started_at",
    "finished_at",
    "elapsed_seconds",
    "cpu_efficiency",
    "max_rss_mb",
    "instance_type",
    "instance_launched_at",
    "instance_terminated_at",
)


def recompute(tasks: Any, *, chunk: int = 2000) -> int:
    """Cost these (ended) tasks again with today's prices, in bulk; the number costed.

    For prices imported after tasks ended, or a changed ``pricing`` block.
    """
    book = price_book()
    costed = 0
    batch: list[Task] = []
    for task in tasks.filter(finished_at__isnull=False).only(*PRICING_INPUTS).iterator(chunk_size=chunk):
        batch.append(task)
        if len(batch) == chunk:
            costed += _save(batch, book)
            batch = []
    return costed + _save(batch, book)


def _save(batch: list[Task], book: PriceBook | None) -> int:
    apply(batch, book)
    Task.objects.bulk_update(batch, COST_FIELDS, batch_size=500)
    return sum(task.cost is not None for task in batch)
