"""Workflow JSON: parse task definitions, expand wildcard deps, reject bad graphs.

Everything here is pure Python (no database), so a 10,000-task workflow is checked
before a single row is written, and an invalid one creates nothing. Every problem is
found in one pass (field errors of every task, duplicate ids, unknown dependencies
and a cycle among the otherwise valid tasks), so one submission shows them all.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from pydantic import ValidationError

from runs.workflows.task_definition import TaskDefinition

__all__ = [
    "Checked",
    "Problem",
    "ResolvedTask",
    "TaskDefinition",
    "WorkflowError",
    "check",
    "parse_tasks",
    "resolve",
    "validate",
]

WILDCARD_CHARS = frozenset("*?[")
MAX_PROBLEMS = 100  # shown; the rest are counted
_BIDI = re.compile(r"[\x80-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow: which task, which field, what."""

    message: str
    task: str | None = None  # the task's id, when it has a readable one
    field: str | None = None  # e.g. "command", "env_vars", "deps"
    index: int | None = None  # position in the task list
    text: str = ""  # the line shown to people, when it says more than the message

    def __str__(self) -> str:
        return self.text or self.message

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "index": self.index, "field": self.field, "message": self.message}


class WorkflowError(ValueError):
    """The workflow cannot be accepted; ``problems`` names every problem found (the first
    MAX_PROBLEMS, then how many more), ``details`` the same as Problem records, ``count``
    how many were found."""

    def __init__(self, problems: str | Problem | Sequence[str | Problem]):
        found = [problems] if isinstance(problems, str | Problem) else list(problems)
        details = [p if isinstance(p, Problem) else Problem(p) for p in found[:MAX_PROBLEMS]]
        if len(found) > MAX_PROBLEMS:
            details.append(Problem(f"... and {len(found) - MAX_PROBLEMS} more problems"))
        self.details = details
        self.problems = [str(p) for p in details]
        self.count = len(found)
        super().__init__("; ".join(self.problems))


@dataclass
class ResolvedTask:
    definition: TaskDefinition
    resolved_deps: list[str]
    dependents: list[str] = field(default_factory=list)


def parse_tasks(payload: str | bytes | list[Any] | dict[str, Any]) -> list[TaskDefinition]:
    """Parse workflow JSON (an array of tasks or ``{"tasks": [...]}``); every task's field
    errors are raised together."""
    parsed = _parse(_load(payload).items)
    if parsed.problems:
        raise WorkflowError(parsed.problems)
    return parsed.tasks


# The keys of a workflow object: its tasks, and whether unknown fields are refused.
DOCUMENT_FIELDS = ("tasks", "strict")
# Fields other tools write for ours (the original's generators among them).
FIELD_SYNONYMS = {
    "dependencies": "deps",
    "depends_on": "deps",
    "dependson": "deps",
    "env": "env_vars",
    "environment_variables": "env_vars",
    "cwd": "working_dir",
    "workdir": "working_dir",
    "queue": "partition",
    "mem": "memory",
    "walltime": "time_limit",
    "time": "time_limit",
    "ncpus": "cpus",
    "cpus_per_task": "cpus",
}


@dataclass
class _Document:
    items: list[Any]
    unknown: list[str] = field(default_factory=list)  # top-level keys that are not ours
    strict: bool = False  # the document's own "strict": true


def _load(payload: str | bytes | list[Any] | dict[str, Any]) -> _Document:
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"invalid workflow JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if isinstance(payload, dict):
        if "tasks" not in payload:
            raise WorkflowError('workflow JSON object has no "tasks" list')
        strict = payload.get("strict", False)
        if not isinstance(strict, bool):
            raise WorkflowError(
                Problem(f'"strict" must be true or false, not {json.dumps(strict)[:40]}', field="strict")
            )
        unknown = [str(key) for key in payload if key not in DOCUMENT_FIELDS]
        items = payload["tasks"]
    else:
        items, unknown, strict = payload, [], False
    if not isinstance(items, list):
        raise WorkflowError('workflow JSON must be an array of tasks or an object with a "tasks" array')
    return _Document(items, unknown, strict)


def unknown_field_notes(document: _Document) -> list[Problem]:
    """One note per field that is not ours: ignored (a warning), or refused when strict."""
    notes = [
        Problem(f"unknown top-level field {key!r}, ignored{_did_you_mean(key, DOCUMENT_FIELDS)}", field=key)
        for key in document.unknown
    ]
    known = set(TaskDefinition.model_fields)
    seen: dict[str, list[str]] = {}  # unknown field -> the tasks (ids or positions) that have it
    for index, raw in enumerate(document.items):
        if isinstance(raw, dict):
            label = raw["id"] if isinstance(raw.get("id"), str) else f"tasks[{index}]"
            for key in raw:
                if key not in known:
                    seen.setdefault(str(key), []).append(_short(label))
    for key, tasks in seen.items():
        named = ", ".join(repr(t) for t in tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
        suggestion = _did_you_mean(key, sorted(known))
        message = f"unknown task field {key!r} (task{'s' if len(tasks) > 1 else ''} {named}), ignored{suggestion}"
        notes.append(Problem(message, field=key))
    return notes


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    close = FIELD_SYNONYMS.get(key.lower()) or next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.7)), None)
    return f" (did you mean {close!r}?)" if close and close in known else ""


@dataclass
class _Parsed:
    tasks: list[TaskDefinition] = field(default_factory=list)  # the valid ones, in order
    positions: list[int] = field(default_factory=list)  # of each valid task in the list
    ids: list[tuple[int, str]] = field(default_factory=list)  # (position, id) of every task with a string id
    problems: list[Problem] = field(default_factory=list)


def _parse(items: list[Any]) -> _Parsed:
    parsed = _Parsed()
    for index, raw in enumerate(items):
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        task_id = _short(raw_id) if isinstance(raw_id, str) else None
        label = f"tasks[{index}]" + (f" ({task_id})" if task_id is not None else "")
        if isinstance(raw_id, str):
            parsed.ids.append((index, raw_id))
        if not isinstance(raw, dict):
            parsed.problems.append(Problem("must be an object", index=index, text=f"{label}: must be an object"))
            continue
        try:
            parsed.tasks.append(TaskDefinition.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                where = ".".join(str(p) for p in err["loc"])
                message = _lower_first(err["msg"])
                parsed.problems.append(Problem(message, task_id, where, index, f"{label}.{where}: {message}"))
        else:
            parsed.positions.append(index)
    return parsed


def _short(task_id: str) -> str:
    """The id as messages show it: cut when far over its limit (it would fill every
    message about its task), and with bidirectional controls written out, so that the
    message reads in the order it is written."""
    short = task_id if len(task_id) <= 100 else task_id[:100] + "…"
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", short)


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
    never matches the task that declares it. Duplicate ids, unknown deps and a cycle are
    raised together.
    """
    problems: list[Problem] = []
    positions = list(range(len(new_tasks)))
    ids = [(i, t.id) for i, t in enumerate(new_tasks)]
    resolved = _resolve(new_tasks, positions, ids, set(existing_ids), problems)
    if problems:
        raise WorkflowError(problems)
    return resolved


def _resolve(
    tasks: Sequence[TaskDefinition],
    positions: Sequence[int],
    ids: Sequence[tuple[int, str]],
    existing: set[str],
    problems: list[Problem],
) -> list[ResolvedTask]:
    """Resolve the valid ``tasks``, adding to ``problems`` rather than stopping at the first.

    ``ids`` are those of every task, valid or not, so that a dependency on a task with a
    field error is not also reported as unknown. The cycle is looked for among the tasks
    with no problem of their own.
    """
    bad = _duplicates(ids, existing, problems)
    index = _IdIndex(existing.union(task_id for _, task_id in ids))
    resolved: list[ResolvedTask] = []
    for position, task in zip(positions, tasks, strict=True):
        before = len(problems)
        resolved.append(ResolvedTask(task, _expand_deps(task, position, index, problems)))
        if len(problems) > before:
            bad.add(task.id)
    by_id = {r.definition.id: r for r in resolved if r.definition.id not in bad}
    for r in by_id.values():
        for dep in r.resolved_deps:
            if dep in by_id:
                by_id[dep].dependents.append(r.definition.id)
    cycle = find_cycle(by_id)
    if cycle:
        where = dict(zip((t.id for t in tasks), positions, strict=True)).get(cycle[0])
        problems.append(Problem("dependency cycle: " + " -> ".join(cycle), cycle[0], "deps", where))
    return resolved


def _duplicates(ids: Sequence[tuple[int, str]], existing: set[str], problems: list[Problem]) -> set[str]:
    """The ids used more than once (or already in the run), each extra use a problem."""
    seen = Counter(task_id for _, task_id in ids)
    duplicated = {task_id for task_id, n in seen.items() if n > 1 or task_id in existing}
    first: set[str] = set()
    for position, task_id in ids:
        if task_id in duplicated and (task_id in first or task_id in existing):
            message = f"duplicate task id {task_id!r}"
            problems.append(Problem(message, _short(task_id), "id", position))
        first.add(task_id)
    return duplicated


def _expand_deps(task: TaskDefinition, position: int, index: _IdIndex, problems: list[Problem]) -> list[str]:
    """The task ids its deps match, in order, without repeats; a dep matching none is a problem."""
    deps: dict[str, None] = {}  # ordered set
    for pattern in task.deps:
        matches = [m for m in index.match(pattern) if m != task.id or pattern == task.id]
        if not matches:
            message = f"dependency {pattern!r} matches no task"
            problems.append(Problem(message, task.id, "deps", position, f"task {task.id!r}: {message}"))
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


@dataclass
class Checked:
    """A valid workflow's tasks, and what in it was ignored (unknown fields)."""

    tasks: list[ResolvedTask]
    warnings: list[str]


def check(
    payload: str | bytes | list[Any] | dict[str, Any], existing_ids: Iterable[str] = (), *, strict: bool = False
) -> Checked:
    """Parse and resolve in one go; raises WorkflowError naming every problem.

    Fields that are not ours (``"dependencies"`` for ``deps``) are warnings, or problems
    when ``strict`` (the site's ``strict_workflows``) or the document says ``"strict": true``.
    """
    document = _load(payload)
    if not document.items:
        raise WorkflowError("workflow has no tasks")
    notes = unknown_field_notes(document)
    parsed = _parse(document.items)
    problems = parsed.problems
    if notes and (strict or document.strict):
        problems += [Problem(n.message.replace(", ignored", ", refused (strict)"), field=n.field) for n in notes]
        notes = []
    resolved = _resolve(parsed.tasks, parsed.positions, parsed.ids, set(existing_ids), problems)
    if problems:
        raise WorkflowError(problems)
    return Checked(resolved, [str(n) for n in notes])


def validate(payload: str | bytes | list[Any] | dict[str, Any], existing_ids: Iterable[str] = ()) -> list[ResolvedTask]:
    """:func:`check` without the warnings."""
    return check(payload, existing_ids).tasks
