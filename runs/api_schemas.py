"""Request and response schemas of the REST API (runs.api); the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import BeforeValidator, ConfigDict, WithJsonSchema

from runs.engine.states import RunStatus, TaskState
from runs.workflow_json import TaskDefinition

PG_INT_MAX = 2_147_483_647  # Run.max_concurrent is an integer column


class ErrorOut(Schema):
    error: str


def _array_or_object(value: Any) -> Any:
    # The engine checks the tasks themselves (and names every problem); here only the shape.
    if not isinstance(value, list | dict):
        raise ValueError('must be an array of tasks or an object with a "tasks" array')
    return value


_TASK_SCHEMA = TaskDefinition.model_json_schema()
_WORKFLOW_SCHEMA = {
    "description": 'The task list: an array of tasks, or an object with a "tasks" array.',
    "oneOf": [
        {"type": "array", "items": _TASK_SCHEMA},
        {
            "type": "object",
            "properties": {"tasks": {"type": "array", "items": _TASK_SCHEMA}},
            "required": ["tasks"],
        },
    ],
}


class RunCreateIn(Schema):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    backend: str = Field(min_length=1, description="Backend name.")
    workflow: Annotated[list[Any] | dict[str, Any], BeforeValidator(_array_or_object), WithJsonSchema(_WORKFLOW_SCHEMA)]
    max_concurrent: int | None = Field(default=None, ge=1, le=PG_INT_MAX, strict=True)
    name: str = Field(default="api", min_length=1, max_length=200, description="Workflow name shown for the run.")


class RunStatusOut(Schema):
    id: str
    status: RunStatus


class RelaunchOut(RunStatusOut):
    requeued: int


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
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    deps: list[str] = Field(description="Dependencies as written (wildcards included).")


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
    tasks: list[TaskOut]


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
    offset: int = Field(default=0, ge=0)
