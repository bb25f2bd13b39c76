"""Request and response schemas of the REST API (runs.api.routes); the OpenAPI document is built from them.

The run, task, counts and cost fields documented here are built by runs.shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.config import JsonDict

from runs.costing.usage import DEFAULT_MONTHS, MAX_MONTHS
from runs.engine.states import RunStatus, TaskState
from runs.notify.spec import NotifySpec
from runs.workflows.limits import PG_INT_MAX
from runs.workflows.task_definition import SINGLE_LINE, SINGLE_LINE_PATTERN, TaskDefinition

TASK_PAGE_DEFAULT = 1000
TASK_PAGE_MAX = 10_000


class ErrorOut(Schema):
    error: str


class ProblemOut(Schema):
    task: str | None = Field(description="Id of the task, when it has one.")
    index: int | None = Field(description="Position of the task in the task list.")
    field: str | None = Field(description='Field path in the task, e.g. "command", "deps.0".')
    message: str


class WorkflowErrorOut(ErrorOut):
    problems: list[ProblemOut] = Field(
        default_factory=list,
        description="Every problem of the workflow (the first 100, then one saying how many more); "
        "only for workflow problems.",
    )


def _array_or_object(value: Any) -> Any:
    # The engine checks the tasks themselves (and names every problem); here only the shape.
    if not isinstance(value, list | dict):
        raise ValueError('must be an array of tasks or an object with a "tasks" array')
    return value


def _as_accepted(schema: dict[str, Any]) -> dict[str, Any]:
    """The task schema as the API accepts it, the original's spellings too: ``null`` for an
    optional field, a count as a numeric string or an integral number (``"4"``, ``4.0``),
    a bare number of MB (``memory``) or minutes (``time_limit``)."""
    required = set(schema.get("required", []))
    properties: dict[str, Any] = {}
    for name, field in schema["properties"].items():
        kinds = [field]
        if field.get("type") == "integer":
            bounds = {k: field[k] for k in ("minimum", "maximum") if k in field}
            kinds += [
                {"type": "string", "pattern": r"^\s*[0-9]{1,10}\s*$"},
                {"type": "number", "multipleOf": 1, **bounds},
            ]
        elif name in ("memory", "time_limit"):
            kinds.append({"type": "integer", "minimum": 0})
        if name not in required:
            kinds.append({"type": "null"})
        if len(kinds) == 1:
            properties[name] = field
            continue
        outer = {k: field.pop(k) for k in ("title", "description", "default") if k in field}
        properties[name] = {**outer, "anyOf": kinds}
    return {**schema, "properties": properties}


_TASK_SCHEMA = _as_accepted(TaskDefinition.model_json_schema())
_TASK_LIST = {"type": "array", "items": _TASK_SCHEMA, "minItems": 1}
_WORKFLOW_SCHEMA = {
    "description": 'The task list: an array of tasks, or an object with a "tasks" array. Task ids must be '
    "unique and every dependency must match a task, without cycles; every problem is reported at once.",
    "oneOf": [_TASK_LIST, {"type": "object", "properties": {"tasks": _TASK_LIST}, "required": ["tasks"]}],
}


_EXAMPLE: JsonDict = {
    "backend": "local",
    "name": "simulations",
    "max_concurrent": 2,
    "workflow": [
        {"id": "prepare", "name": "Prepare", "command": "python prepare.py", "time_limit": "10:00"},
        {"id": "sim.1", "name": "Simulation 1", "command": "python sim.py 1", "deps": ["prepare"], "cpus": 2},
        {"id": "sim.2", "name": "Simulation 2", "command": "python sim.py 2", "deps": ["prepare"], "memory": "8G"},
        {"id": "report", "name": "Report", "command": "python report.py", "deps": ["sim.*"], "retries": 1},
    ],
}


class RunCreateIn(Schema):
    # A misspelt field is an error, not ignored.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    backend: Annotated[str, SINGLE_LINE] = Field(
        min_length=1,
        max_length=100,
        description="Name of a backend you may use (GET /api/backends lists them).",
        json_schema_extra={"pattern": SINGLE_LINE_PATTERN},
    )
    workflow: Annotated[list[Any] | dict[str, Any], BeforeValidator(_array_or_object), WithJsonSchema(_WORKFLOW_SCHEMA)]
    max_concurrent: int | None = Field(default=None, ge=1, le=PG_INT_MAX, strict=True)
    name: Annotated[str, SINGLE_LINE] = Field(
        default="api",
        min_length=1,
        max_length=200,
        description="Workflow name shown for the run.",
        json_schema_extra={"pattern": SINGLE_LINE_PATTERN},
    )
    notify: NotifySpec | None = Field(default=None, description="This run's notifications; default: your preferences.")


class RunStatusOut(Schema):
    id: str
    status: RunStatus


class RunCreatedOut(RunStatusOut):
    warnings: list[str] = Field(
        description="What the run starts without: fields of the workflow that are not ScriptHut's "
        '(e.g. "dependencies" for "deps"; refused instead when the document says "strict": true '
        "or the site sets strict_workflows), environments that do not exist."
    )
    replayed: bool = Field(
        default=False, description="True when an earlier request with the same Idempotency-Key created this run."
    )


class RelaunchOut(RunStatusOut):
    requeued: int


class CostOut(Schema):
    """A run's estimated cost (EC2 prices, see the README's "Cost"); null when pricing is off."""

    total_usd: float = Field(description="Sum of the costed tasks' costs.")
    waste_usd: float | None = Field(description="Part of it paid for CPU and memory asked for and not used.")
    costed_tasks: int = Field(description="Tasks with a cost (ended, with timing, on a mapped partition).")
    tasks: int
    price_type: str = Field(description="ondemand, spot_avg, spot_min or spot_max.")
    region: str
    prices_date: datetime | None = Field(description="Date of the price list.")


class RunSummaryOut(Schema):
    id: str
    workflow_name: str
    status: RunStatus
    backend: str
    owner: str
    max_concurrent: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="Number of tasks in each state.")
    cost: CostOut | None


class RunPageOut(Schema):
    count: int = Field(description="Runs matching the filter, over all pages.")
    items: list[RunSummaryOut]


class TaskOut(Schema):
    id: str
    name: str
    state: TaskState
    job_id: str
    exit_code: int | None
    reason: str
    warning: str = Field(description="Submitted, but not quite as asked (e.g. an image the backend ignored).")
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    deps: list[str] = Field(description="Dependencies as written (wildcards included).")
    cost: float | None = Field(description="Estimated USD; null if not costed or pricing is off.")
    waste_cost: float | None = Field(description="USD of the CPU and memory asked for and not used.")


class RunDetailOut(Schema):
    id: str
    status: RunStatus
    backend: str
    workflow_name: str
    owner: str
    error: str
    warnings: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    task_count: int = Field(description="Tasks in the run, over all pages.")
    counts: dict[str, int] = Field(description="Number of tasks in each state (every state, zeros included).")
    next: str | None = Field(description="URL of the next page of tasks; null on the last page.")
    tasks: list[TaskOut] = Field(description="One page of the tasks, in workflow order (see limit and offset).")
    cost: CostOut | None


class SourceOut(Schema):
    name: str
    type: str
    backend: str
    workflows_glob: str
    synced_at: datetime | None
    synced_sha: str
    sync_error: str
    workflow_files: list[Any]


class BackendOut(Schema):
    name: str
    type: str
    status: str
    status_message: str
    last_polled_at: datetime | None
    max_concurrent: int
    active: int = Field(description="Tasks holding a slot on the backend now (submitting/submitted/running).")
    enabled: bool


class RunFilter(Schema):
    status: RunStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=PG_INT_MAX)


class TaskPage(Schema):
    limit: int = Field(default=TASK_PAGE_DEFAULT, ge=1, le=TASK_PAGE_MAX, description="Tasks per page.")
    offset: int = Field(default=0, ge=0, le=PG_INT_MAX, description="Tasks to skip, in workflow order.")


TASK_ID_DOC = "A task id as the workflow wrote it; it may contain dots and slashes (py.pricing.0, a/b)."
FILE_DOC = "A workflow file of the source, as listed by list_source_workflows; it may contain slashes."


class ResourcesOut(Schema):
    partition: str
    cpus: int
    memory: str
    time_limit: str
    gres: str
    image: str
    working_dir: str
    environment: str


class EfficiencyOut(Schema):
    cpu: float | None = Field(description="CPU time used / (elapsed x CPUs), 0 to 1.")
    used_mb: float | None = Field(description="Peak memory used.")
    requested_mb: int | None
    out_of_memory: bool


class TaskDetailOut(TaskOut):
    run_id: str
    command: str
    resolved_deps: list[str] = Field(description="Task ids after wildcard expansion.")
    generated_by: str = Field(description="The task whose generates_source file added this one, if any.")
    resources: ResourcesOut
    attempt: int = Field(description="Which try this is: 1 for the first, then 2, 3, ... (retries).")
    retries: int
    run_attempt: int = Field(description="The run's attempt it last ran in (relaunches).")
    node: str
    queue_wait_seconds: float | None
    efficiency: EfficiencyOut | None = Field(description="Of a finished task; null when nothing was measured.")
    priced_with: str
    instance_type: str
    cancel_requested_by: str = Field(description="Who cancelled this task alone; its job is cancelled next tick.")


class TaskStateOut(Schema):
    run_id: str
    task_id: str
    state: TaskState


class TaskScriptOut(Schema):
    run_id: str
    task_id: str
    script: str = Field(description="The job script ScriptHut submitted; empty until it is.")
    output_path: str = Field(description="Where the task's output log is written, on its backend.")
    error_path: str


class LogTail(Schema):
    tail: int | None = Field(default=None, ge=1, le=100_000, description="Only the last N lines.")


class DocumentRunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    max_concurrent: int | None = Field(default=None, ge=1, le=PG_INT_MAX, strict=True)
    notify: NotifySpec | None = Field(default=None, description="This run's notifications; default: your preferences.")


class SourceRunIn(DocumentRunIn):
    file: Annotated[str, SINGLE_LINE] = Field(min_length=1, max_length=1000, description=FILE_DOC)


class SourceFileIn(Schema):
    model_config = ConfigDict(extra="forbid")

    file: Annotated[str, SINGLE_LINE] = Field(min_length=1, max_length=1000, description=FILE_DOC)


class DryRunTaskOut(Schema):
    id: str
    name: str
    command: str
    deps: list[str]
    resolved_deps: list[str]


class DryRunOut(Schema):
    workflow: str
    backend: str
    count: int = Field(description="Tasks a run would have; nothing was stored.")
    warnings: list[str] = Field(default_factory=list)
    tasks: list[dict[str, Any]] = Field(description="Each task as it would be created, with its resolved_deps.")


class SyncOut(Schema):
    name: str
    synced_at: datetime | None
    synced_sha: str
    sync_error: str = Field(description="Why the last sync failed; empty when it worked.")
    workflow_files: list[Any]


class WorkflowOut(Schema):
    name: str
    backend: str
    command: str
    max_concurrent: int
    description: str
    git: dict[str, Any] | None


class UsageRowOut(Schema):
    label: str
    cost: float | None
    waste: float | None
    cpu_hours: float
    tasks: int
    costed: int


class UsageOut(Schema):
    months: int
    everyone: bool = Field(description="Everyone's usage (staff); else the caller's own.")
    total: UsageRowOut
    by_user: list[UsageRowOut]
    by_backend: list[UsageRowOut]
    by_month: list[UsageRowOut]


class UsageQuery(Schema):
    months: int = Field(default=DEFAULT_MONTHS, ge=1, le=MAX_MONTHS, description="Months back, this one included.")


class MeOut(Schema):
    username: str
    email: str
    is_staff: bool
    groups: list[str]
    backends: list[str] = Field(description="Backends the caller may use.")
    token_scope: str = Field(description="read or write: what the token used for this request may do.")
