"""Request and response schemas of the REST API (runs.api.routes); the OpenAPI document is built from them.

The run, task, counts and cost fields documented here are built by runs.shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.config import JsonDict

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


_TASK_SCHEMA = TaskDefinition.model_json_schema()
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
