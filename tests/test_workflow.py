"""Workflow JSON parsing and validation (pure Python, no database)."""

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runs.workflows.parse import WorkflowError, parse_tasks, resolve, validate


def t(task_id, deps=(), **extra):
    return {"id": task_id, "name": task_id.title(), "command": "true", "deps": list(deps), **extra}


def test_array_and_object_forms_with_spec_defaults():
    for payload in ([t("a")], {"tasks": [t("a")]}):
        (task,) = parse_tasks(payload)
        assert (task.partition, task.cpus, task.memory, task.time_limit, task.working_dir) == (
            "normal",
            1,
            "4G",
            "1:00:00",
            "~",
        )
        assert task.retries == 0


def test_invalid_json_names_the_position():
    with pytest.raises(WorkflowError, match="invalid workflow JSON: .* line 1"):
        parse_tasks('[{"id": "a",}]')


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"jobs": []}, 'no "tasks" list'),
        ("42", "must be an array"),
        ([{"id": "a", "name": "A"}], r"tasks\[0\] \(a\)\.command: field required"),
        ([t("a", cpus=0)], r"cpus: input should be greater than or equal to 1"),
        ([t("a", memory="lots")], "invalid memory 'lots'"),
        ([t("a", time_limit="soon")], "invalid time limit 'soon'"),
        ([t("a", env_vars={"BAD NAME": "x"})], "not a valid environment variable name"),
        (["not an object"], r"tasks\[0\]: must be an object"),
        ([t("a\n#SBATCH --uid=0")], r"tasks\[0\] \(a\n#SBATCH --uid=0\)\.id: value error, must not contain newlines"),
        ([t("a", name="x\ry")], r"\.name: value error, must not contain newlines"),
        ([], "no tasks"),
    ],
)
def test_bad_tasks_are_named(payload, message):
    with pytest.raises(WorkflowError, match=message):
        validate(payload)


def test_duplicate_ids():
    with pytest.raises(WorkflowError, match="duplicate task id 'a'"):
        validate([t("a"), t("a")])


def test_unknown_dependency_and_unmatched_wildcard():
    with pytest.raises(WorkflowError) as err:
        validate([t("a", ["nope"]), t("b", ["build.*"])])
    assert err.value.problems == [
        "task 'a': dependency 'nope' matches no task",
        "task 'b': dependency 'build.*' matches no task",
    ]


def test_question_mark_matches_one_character_only():
    tasks = [t("step.1"), t("step.2"), t("step.10"), t("end", ["step.?"])]
    resolved = {r.definition.id: r for r in validate(tasks)}
    assert resolved["end"].resolved_deps == ["step.1", "step.2"]
    assert sorted(resolved["step.1"].dependents) == ["end"]
    assert resolved["step.10"].dependents == []


def test_spec_wildcard_example():
    tasks = [
        t("setup.init"),
        t("build.x", ["setup.*"]),
        t("build.y", ["setup.*"]),
        t("final.merge", ["build.*"]),
        t("data.a"),
        t("data.b"),
        t("data.c"),
        t("use", ["data.[ab]"]),
    ]
    resolved = {r.definition.id: r.resolved_deps for r in validate(tasks)}
    assert resolved["final.merge"] == ["build.x", "build.y"]
    assert resolved["use"] == ["data.a", "data.b"]


def test_wildcard_does_not_match_the_task_itself():
    resolved = {r.definition.id: r.resolved_deps for r in validate([t("g.a"), t("g.b", ["g.*"])])}
    assert resolved["g.b"] == ["g.a"]


@pytest.mark.parametrize(
    ("tasks", "cycle"),
    [
        ([t("a", ["b"]), t("b", ["a"])], "dependency cycle: a -> b -> a"),
        ([t("a", ["a"])], "dependency cycle: a -> a"),
        ([t("x"), t("a", ["c", "x"]), t("b", ["a"]), t("c", ["b"])], "dependency cycle: a -> c -> b -> a"),
    ],
)
def test_cycles_are_named(tasks, cycle):
    with pytest.raises(WorkflowError, match=cycle.replace(">", r"\>")):
        validate(tasks)


def test_generated_batch_can_depend_on_existing_tasks():
    resolved = validate([t("sim-1", ["setup"]), t("agg", ["sim-*"])], existing_ids=["setup", "plan"])
    assert {r.definition.id: r.resolved_deps for r in resolved} == {"sim-1": ["setup"], "agg": ["sim-1"]}
    with pytest.raises(WorkflowError, match="duplicate task id 'plan'"):
        validate([t("plan")], existing_ids=["plan"])


ids = st.lists(st.from_regex(r"[a-c]{1,2}(\.[0-9]{1,2})?", fullmatch=True), min_size=1, max_size=30, unique=True)
patterns = st.from_regex(r"[a-c*?]{1,3}(\.[0-9*?\[\]]{0,3})?", fullmatch=True)


@given(ids, patterns)
def test_wildcard_expansion_agrees_with_fnmatch(task_ids, pattern):
    """The prefix-indexed matcher gives exactly what a plain fnmatch scan gives."""
    expected = [i for i in sorted(task_ids) if fnmatchcase(i, pattern) and i != "zz"]
    tasks = [t(i) for i in task_ids] + [t("zz", [pattern])] if expected else [t(i) for i in task_ids]
    try:
        resolved = {r.definition.id: r.resolved_deps for r in resolve(parse_tasks(tasks))}
    except WorkflowError:
        # an invalid bracket pattern matching nothing is the only acceptable error
        assert not expected
        return
    if expected:
        assert sorted(resolved["zz"]) == expected
