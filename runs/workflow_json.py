"""Workflow JSON: parse task definitions, expand wildcard deps, reject bad graphs.

Everything here is pure Python (no database), so a 10,000-task workflow is checked
before a single row is written, and an invalid one creates nothing.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WILDCARD_CHARS = frozenset("*?[")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class WorkflowError(ValueError):
    """The workflow cannot be accepted; the message names every problem found."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class TaskDefinition(BaseModel):
    """One task as written in workflow JSON (fields and defaults as in the original)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    id: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=255)
    command: str = Field(min_length=1)
    deps: list[str] = Field(default_factory=list)
    working_dir: str = "~"
    partition: str = "normal"
    cpus: int = Field(default=1, ge=1)
    memory: str = "4G"
    time_limit: str = "1:00:00"
    output_file: str = ""
    error_file: str = ""
    environment: str = ""
    env_vars: dict[str, str] = Field(default_factory=dict)
    generates_source: str = ""
    gres: str = ""
    image: str = ""
    retries: int = Field(default=0, ge=0, le=100)

    @field_validator("env_vars", mode="before")
    @classmethod
    def _stringify_values(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: v if isinstance(v, str) else json.dumps(v) if not isinstance(v, int | float) else str(v)
                for k, v in value.items()
            }
        return value

    @field_validator("env_vars")
    @classmethod
    def _valid_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not a valid environment variable name: {bad[0]!r}")
        return value

    @field_validator("id", "name", "partition", "environment", "output_file", "error_file", "generates_source", "gres")
    @classmethod
    def _single_line(cls, value: str) -> str:
        # These end up on scheduler directive lines, where a newline would start a new directive.
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain newlines or other control characters")
        return value

    @field_validator("memory", "time_limit", "partition", "working_dir")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("time_limit")
    @classmethod
    def _valid_time_limit(cls, value: str) -> str:
        from backends.units import parse_duration

        parse_duration(value)  # raises ValueError with the reason
        return value

    @field_validator("memory")
    @classmethod
    def _valid_memory(cls, value: str) -> str:
        from backends.units import parse_memory_mb

        parse_memory_mb(value)
        return value


@dataclass
class ResolvedTask:
    definition: TaskDefinition
    resolved_deps: list[str]
    dependents: list[str] = field(default_factory=list)


def parse_tasks(payload: str | bytes | list[Any] | dict[str, Any]) -> list[TaskDefinition]:
    """Parse workflow JSON (an array of tasks or ``{"tasks": [...]}``)."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"invalid workflow JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if isinstance(payload, dict):
        if "tasks" not in payload:
            raise WorkflowError('workflow JSON object has no "tasks" list')
        payload = payload["tasks"]
    if not isinstance(payload, list):
        raise WorkflowError('workflow JSON must be an array of tasks or an object with a "tasks" array')
    problems: list[str] = []
    tasks: list[TaskDefinition] = []
    for index, raw in enumerate(payload):
        label = f"tasks[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label += f" ({raw['id']})"
        if not isinstance(raw, dict):
            problems.append(f"{label}: must be an object")
            continue
        try:
            tasks.append(TaskDefinition.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"{label}.{where}: {_lower_first(err['msg'])}")
        if len(problems) >= 20:
            problems.append("... (stopped after 20 problems)")
            break
    if problems:
        raise WorkflowError(problems)
    return tasks


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class _IdIndex:
    """Sorted task ids, so a wildcard with a literal prefix scans only that range."""

    def __init__(self, ids: Iterable[str]):
        self.sorted_ids = sorted(ids)
        self.id_set = set(self.sorted_ids)
        self._cache: dict[str, list[str]] = {}

    def match(self, pattern: str) -> list[str]:
        cached = self._cache.get(pattern)
        if cached is not None:
            return cached
        if not WILDCARD_CHARS.intersection(pattern):
            result = [pattern] if pattern in self.id_set else []
        else:
            prefix = _literal_prefix(pattern)
            start = bisect.bisect_left(self.sorted_ids, prefix)
            regex = re.compile(translate(pattern))
            result = []
            for task_id in self.sorted_ids[start:]:
                if not task_id.startswith(prefix):
                    break
                if regex.match(task_id):
                    result.append(task_id)
        self._cache[pattern] = result
        return result


def _literal_prefix(pattern: str) -> str:
    cut = min((pattern.index(c) for c in WILDCARD_CHARS if c in pattern), default=len(pattern))
    return pattern[:cut]


def resolve(
    new_tasks: Sequence[TaskDefinition],
    existing_ids: Iterable[str] = (),
) -> list[ResolvedTask]:
    """Expand deps against existing + new ids, check ids and cycles; return tasks in order.

    ``existing_ids`` are tasks already in the run (for generated batches). A wildcard
    never matches the task that declares it.
    """
    existing = set(existing_ids)
    seen = _unique_ids(new_tasks, existing)
    index = _IdIndex(existing | seen)
    problems: list[str] = []
    resolved: list[ResolvedTask] = []
    for task in new_tasks:
        resolved.append(ResolvedTask(task, _expand_deps(task, index, problems)))
        if len(problems) >= 20:
            break
    if problems:
        raise WorkflowError(problems)
    by_id = {r.definition.id: r for r in resolved}
    for r in resolved:
        for dep in r.resolved_deps:
            if dep in by_id:
                by_id[dep].dependents.append(r.definition.id)
    cycle = find_cycle(by_id)
    if cycle:
        raise WorkflowError("dependency cycle: " + " -> ".join(cycle))
    return resolved


def _unique_ids(new_tasks: Sequence[TaskDefinition], existing: set[str]) -> set[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for task in new_tasks:
        if task.id in seen or task.id in existing:
            problems.append(f"duplicate task id {task.id!r}")
        seen.add(task.id)
    if problems:
        raise WorkflowError(problems[:20])
    return seen


def _expand_deps(task: TaskDefinition, index: _IdIndex, problems: list[str]) -> list[str]:
    """The task ids its deps match, in order, without repeats; a dep matching none is a problem."""
    deps: dict[str, None] = {}  # ordered set
    for pattern in task.deps:
        matches = [m for m in index.match(pattern) if m != task.id or pattern == task.id]
        if not matches:
            problems.append(f"task {task.id!r}: dependency {pattern!r} matches no task")
        deps.update(dict.fromkeys(matches))
    return list(deps)


def find_cycle(graph: Mapping[str, ResolvedTask]) -> list[str] | None:
    """Return one cycle as ``[a, b, ..., a]`` or None (iterative DFS, O(edges))."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        colour[root] = grey
        path.append(root)
        while stack:
            node, i = stack[-1]
            deps = graph[node].resolved_deps
            if i < len(deps):
                stack[-1] = (node, i + 1)
                dep = deps[i]
                if dep not in graph:
                    continue  # an existing task: it cannot depend on new ones
                if colour[dep] == grey:
                    return path[path.index(dep) :] + [dep]
                if colour[dep] == white:
                    colour[dep] = grey
                    path.append(dep)
                    stack.append((dep, 0))
            else:
                colour[node] = black
                path.pop()
                stack.pop()
    return None


def validate(payload: str | bytes | list[Any] | dict[str, Any], existing_ids: Iterable[str] = ()) -> list[ResolvedTask]:
    """Parse and resolve in one go; raises WorkflowError naming the problems."""
    tasks = parse_tasks(payload)
    if not tasks:
        raise WorkflowError("workflow has no tasks")
    return resolve(tasks, existing_ids)
