"""Workflows, runs, their tasks, the jobs seen on backends, and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models
from django.db.models import Sum
from django.utils import timezone

from runs.engine import states
from runs.engine.states import RunStatus, TaskState
from scripthut_site.crypto import EncryptedJSONField

if TYPE_CHECKING:
    from backends.models import Backend


def new_run_id() -> str:
    return secrets.token_hex(4)


def task_group(task_id: str) -> str:
    """Dot prefix that groups tasks on the run page (``sim.1`` is in ``sim``; ``final`` in none)."""
    head, dot, _ = task_id.rpartition(".")
    return head if dot else ""


# Who may see which runs, tasks and jobs is runs.access (visible_runs, visible_tasks, ...).

Viewer: TypeAlias = AbstractBaseUser | AnonymousUser


class RunQuerySet(models.QuerySet["Run"]):
    def on(self, backend: Backend, owner: int | None = None) -> RunQuerySet:
        """Runs on ``backend``; only ``owner``'s if given (a per_user backend's tick
        works for one owner at a time)."""
        runs = self.filter(backend=backend)
        return runs if owner is None else runs.filter(owner_id=owner)


class TaskQuerySet(models.QuerySet["Task"]):
    def on(self, backend: Backend, owner: int | None = None) -> TaskQuerySet:
        """Tasks of the runs on ``backend``; only of ``owner``'s runs if given."""
        tasks = self.filter(run__backend=backend)
        return tasks if owner is None else tasks.filter(run__owner_id=owner)

    def state_counts(self, run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Tasks per state of each of these runs (every state, zeros included, in the states'
        order): what pages, the API, the push, the run's status and its notifications count.
        One query of the stored counts (``runs.counts``: a row per group and state), never
        of the tasks themselves."""
        ids = list(run_ids)
        counts = {run_id: dict.fromkeys(TaskState.values, 0) for run_id in ids}
        rows = TaskCount.objects.filter(run_id__in=ids).values_list("run_id", "state").annotate(n=Sum("n"))
        for run_id, state, n in rows.order_by():
            counts[run_id][state] = n
        return counts


class Workflow(models.Model):
    """A configured way to get a task list: a command whose stdout is the task JSON."""

    name = models.CharField(max_length=200, unique=True)
    backend = models.ForeignKey("backends.Backend", on_delete=models.PROTECT, related_name="workflows")
    command = models.TextField()
    # Empty: its backend's max_concurrent (effective_max_concurrent).
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    description = models.TextField(blank=True)
    # {"repo", "branch", "deploy_key", "clone_dir"} or null; encrypted at rest, as the
    # repository URL may carry a password or token.
    git = EncryptedJSONField(null=True, blank=True)
    allowed_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="workflows", help_text="Empty: everyone who may use its backend."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_max_concurrent(self) -> int:
        """The limit its runs get when their starter gives none."""
        limit: int = self.max_concurrent or self.backend.max_concurrent
        return limit


class Run(models.Model):
    Status = RunStatus  # defined with the task states in runs.engine.states

    id = models.CharField(primary_key=True, max_length=16, default=new_run_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="runs")
    workflow_name = models.CharField(max_length=200)
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    backend = models.ForeignKey("backends.Backend", on_delete=models.PROTECT, related_name="runs")
    # Members of these groups see the run (its page, its live updates) as its owner does.
    shared_with = models.ManyToManyField("auth.Group", blank=True, related_name="shared_runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    max_concurrent = models.PositiveIntegerField(default=10)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    git_repo = models.CharField(max_length=500, blank=True)
    git_branch = models.CharField(max_length=200, blank=True)
    git_sha = models.CharField(max_length=64, blank=True)
    clone_dir = models.CharField(max_length=500, blank=True, help_text="Git checkout tasks run in.")
    error = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # One entry per relaunch, oldest first: {"at", "by", "tasks", "previous_seconds"} (the
    # active time of the attempt it ended), so the idle time between attempts never counts.
    relaunches = models.JSONField(default=list, blank=True)
    # Who cancelled it (empty: not cancelled, or by the system); schedulers that keep a reason are told.
    cancelled_by = models.CharField(max_length=150, blank=True)
    # When retention removed its job files from the backend (runs.retention); null: still there.
    files_removed_at = models.DateTimeField(null=True, blank=True)
    # The schedule that started it (runs.schedules); null: started by a person.
    schedule = models.ForeignKey("runs.Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # Why its ready tasks wait, kept by the tick (runs.engine.waiting); "": they do not.
    waiting_reason = models.CharField(max_length=255, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["backend", "status"]),
            models.Index(fields=["-finished_at"], name="runs_run_finished_idx"),  # the dashboard's recent runs
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} ({self.id})"

    @property
    def is_finished(self) -> bool:
        return self.status in states.RUN_FINISHED

    @property
    def attempt(self) -> int:
        return len(self.relaunches) + 1

    @property
    def attempt_started_at(self) -> datetime | None:
        """When the current attempt began: the first start, or the last relaunch."""
        return datetime.fromisoformat(self.relaunches[-1]["at"]) if self.relaunches else self.started_at

    @property
    def active_seconds(self) -> float | None:
        """How long the run has been running, its attempts added up (None before it starts)."""
        start = self.attempt_started_at
        if self.started_at is None or start is None:
            return None
        current = max(0.0, ((self.finished_at or timezone.now()) - start).total_seconds())
        return sum(r["previous_seconds"] for r in self.relaunches) + current

    @property
    def is_settled(self) -> bool:
        """Finished and its finish time filled in: its page has nothing left to update
        (a cancelled run is finished at once; its jobs' ends and its finish time follow)."""
        return self.is_finished and self.finished_at is not None


class Task(models.Model):
    State = TaskState  # the state machine: runs.engine.states

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    position = models.PositiveIntegerField(help_text="Order in the workflow; submission order.")
    task_id = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    command = models.TextField()
    deps = models.JSONField(default=list, blank=True, help_text="As written, wildcards included.")
    resolved_deps = models.JSONField(default=list, blank=True, help_text="Task ids after wildcard expansion.")
    # Reverse edges, kept so that a completion touches only its dependents.
    dependents = models.JSONField(default=list, blank=True)
    waiting_on = models.PositiveIntegerField(default=0, help_text="Dependencies not completed yet.")

    partition = models.CharField(max_length=100, default="normal")
    cpus = models.PositiveIntegerField(default=1)
    memory = models.CharField(max_length=32, default="4G")
    time_limit = models.CharField(max_length=32, default="1:00:00")
    working_dir = models.CharField(max_length=1000, default="~")
    environment = models.CharField(max_length=100, blank=True)
    env_vars = models.JSONField(default=dict, blank=True)
    output_file = models.CharField(max_length=1000, blank=True)
    error_file = models.CharField(max_length=1000, blank=True)
    generates_source = models.CharField(max_length=1000, blank=True)
    gres = models.CharField(max_length=100, blank=True)
    image = models.CharField(max_length=500, blank=True)
    retries = models.PositiveIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0, help_text="0 for the first try, then 1, 2, ...")
    generated_by = models.CharField(max_length=255, blank=True)
    run_attempt = models.PositiveIntegerField(default=1, help_text="The run's attempt it last ran in (relaunches).")

    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    reason = models.TextField(blank=True, help_text="Why the task is in its state (pending reason, error).")
    warning = models.TextField(blank=True, help_text="Submitted, but not quite as asked (e.g. its image ignored).")
    submit_tag = models.CharField(max_length=80, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    job_id = models.CharField(max_length=100, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    elapsed_seconds = models.FloatField(null=True, blank=True)
    node = models.CharField(max_length=200, blank=True)
    queue_wait_seconds = models.FloatField(null=True, blank=True, help_text="Start minus submit time.")
    cpu_efficiency = models.FloatField(null=True, blank=True, help_text="CPU time used / (elapsed x CPUs).")
    max_rss_mb = models.FloatField(null=True, blank=True, help_text="Peak memory used.")
    out_of_memory = models.BooleanField(default=False, help_text="The backend says the job ran out of memory.")
    unknown_since = models.DateTimeField(
        null=True, blank=True, help_text="First poll at which the scheduler had no record of the job."
    )
    native_deps = models.BooleanField(
        default=False, help_text="Submitted before its dependencies finished, held by the scheduler (afterok)."
    )
    script = models.TextField(blank=True)
    cancel_requested_by = models.CharField(
        max_length=150, blank=True, help_text="Who cancelled this one task; the next tick cancels its job."
    )
    # Cost (runs.costing), set when the task ends; null: not costed (no pricing, no timing, unmapped partition).
    cost = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True, help_text="Estimated USD.")
    waste_cost = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD of CPU and memory asked for, not used."
    )
    priced_with = models.CharField(max_length=200, blank=True, help_text="Instance type, price type and rate used.")
    # EC2 backend: the instance the task had to itself (set by that backend), costed launch to terminate.
    instance_type = models.CharField(max_length=64, blank=True)
    instance_launched_at = models.DateTimeField(null=True, blank=True)
    instance_terminated_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "task_id"], name="unique_task_id_per_run")]
        indexes = [
            # Ready tasks of a run, in order: the submit step's query.
            models.Index(fields=["run", "state", "waiting_on", "position"]),
            # A run's rows in order, a page at a time (the API, a group's pages).
            models.Index(fields=["run", "position"], name="task_run_position"),
            # Active tasks across runs: the poll step and the concurrency counts.
            models.Index(fields=["state"]),
            models.Index(fields=["submit_tag"]),
            # The usage page's sums per month.
            models.Index(fields=["finished_at"], name="task_finished_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in states.ACTIVE

    @property
    def is_finished(self) -> bool:
        return self.state in states.FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.elapsed_seconds is not None:
            return self.elapsed_seconds
        if self.started_at:
            end = self.finished_at or timezone.now()
            return (end - self.started_at).total_seconds()
        return None

    @property
    def group(self) -> str:
        return task_group(self.task_id)


class ObservedJob(models.Model):
    """A job seen on a backend at the last poll: ours (``our_task`` set) or external."""

    backend = models.ForeignKey("backends.Backend", on_delete=models.CASCADE, related_name="observed_jobs")
    job_id = models.CharField(max_length=100)
    our_task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=255, blank=True)
    user = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=32)
    reason = models.CharField(max_length=255, blank=True)
    partition = models.CharField(max_length=100, blank=True)
    cpus = models.PositiveIntegerField(null=True, blank=True)
    node = models.CharField(max_length=200, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["backend", "job_id"]
        constraints = [models.UniqueConstraint(fields=["backend", "job_id"], name="unique_job_per_backend")]
        indexes = [models.Index(fields=["user"])]

    def __str__(self) -> str:
        return f"{self.backend}:{self.job_id}"


class ApiToken(models.Model):
    """An API token; only a SHA-256 of the key is stored (the row is found by it), the key is shown once.

    ``prefix`` keeps the key's first 4 characters (of 43, 256 random bits), only to tell tokens
    apart in the admin: far too few to guess the rest. A token made on ``/settings/tokens``
    has a name, a scope (``read``: no operation that changes something) and an expiry;
    ``scripthut createtoken`` makes write tokens that never expire. A revoked or expired
    token is refused with a 401 saying so (runs.api.token_auth).
    """

    PREFIX_LENGTH = 4

    class Scope(models.TextChoices):
        READ = "read", "read: look, never change"
        WRITE = "write", "write: everything you may do"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=PREFIX_LENGTH, editable=False, help_text="First 4 characters of the key, to tell tokens apart."
    )
    name = models.CharField(max_length=100, blank=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.WRITE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_from = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.prefix}…"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user: models.Model, **fields: Any) -> str:
        key = secrets.token_urlsafe(32)
        cls.objects.create(user=user, key_hash=cls.hash_key(key), prefix=key[: cls.PREFIX_LENGTH], **fields)
        return key

    def refusal(self, now: datetime) -> str:
        """Why this token may not be used at ``now``; empty when it may."""
        if self.revoked_at is not None:
            return f"API token {self.prefix}… was revoked on {self.revoked_at:%Y-%m-%d %H:%M} UTC"
        if self.expires_at is not None and self.expires_at <= now:
            return f"API token {self.prefix}… expired on {self.expires_at:%Y-%m-%d %H:%M} UTC"
        return ""


class PortalSettings(models.Model):
    """The ``settings`` and ``pricing`` blocks of the config file (one row)."""

    poll_interval = models.PositiveIntegerField(default=60)
    server_host = models.CharField(max_length=200, default="127.0.0.1")
    server_port = models.PositiveIntegerField(default=8000)
    sources_cache_dir = models.CharField(max_length=500, blank=True)
    pricing = models.JSONField(null=True, blank=True)
    # Refuse workflow documents with fields that are not ours (else they are warnings).
    strict_workflows = models.BooleanField(default=False)
    # The original's dashboard filter: the user whose jobs the dashboard shows at first.
    filter_user = models.CharField(max_length=150, blank=True)
    # Whom users ask for access (empty: the staff's email addresses; runs.web.no_access).
    contact = models.CharField(max_length=500, blank=True)
    # Retention (runs.retention): job files of runs finished this many days ago are removed
    # (0: kept); database rows of runs finished keep_runs_days ago are deleted (null: kept).
    retention_days = models.PositiveIntegerField(default=30)
    keep_runs_days = models.PositiveIntegerField(null=True, blank=True)
    last_cleanup_at = models.DateTimeField(null=True, blank=True)
    token_max_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Longest expiry of the tokens users make (staff set it); empty: no limit."
    )

    class Meta:
        verbose_name_plural = "portal settings"

    def __str__(self) -> str:
        return "Portal settings"

    @classmethod
    def load(cls) -> PortalSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


# One Django app, its models kept with the packages that use them: Django finds them here.
from runs.api.models import IdempotencyKey  # noqa: E402,F401
from runs.audit.models import AppendOnly, AuditEvent  # noqa: E402,F401
from runs.costing.models import Budget, BudgetAlert, InstancePrice, PriceList  # noqa: E402,F401
from runs.counts.models import CostSum, TaskCount  # noqa: E402,F401
from runs.metrics.models import TickCounters  # noqa: E402,F401
from runs.notify.models import Notification, NotificationPreference, RunNotify, VerifiedEmail  # noqa: E402,F401
from runs.schedules.models import Schedule  # noqa: E402,F401
