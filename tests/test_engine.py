"""The run engine on the real local backend: processes are really started and polled."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db.models import Count
from django.utils import timezone

from backends.base import JobState, JobStatus, PollResult
from backends.models import Backend, Environment
from backends.registry import get_adapter
from runs import actions
from runs.actions import cancel_run, create_run, relaunch_run
from runs.engine import cancel, claim, poll
from runs.engine.jobspec import task_log
from runs.engine.states import ACTIVE
from runs.engine.tick import tick_due_backends
from runs.models import AuditEvent, Run, Task, Workflow
from runs.workflows.command import dry_run, start_run
from runs.workflows.parse import WorkflowError

pytestmark = pytest.mark.django_db(transaction=True)


def t(task_id, command="true", deps=(), **extra):
    return {"id": task_id, "name": task_id, "command": command, "deps": list(deps), **extra}


def states(run: Run) -> dict[str, str]:
    return dict(run.tasks.values_list("task_id", "state"))


def output(task: Task) -> str:
    return Path(log_path(task, "output")).read_text()


def test_invalid_workflow_creates_no_run(user, local_backend):
    for payload in ("[{", [t("a", deps=["ghost"])], [t("a", deps=["b"]), t("b", deps=["a"])]):
        with pytest.raises(WorkflowError):
            create_run(owner=user, backend=local_backend, payload=payload, workflow_name="bad")
    assert Run.objects.count() == 0
    assert Task.objects.count() == 0


def test_run_completes_in_dependency_order(user, local_backend, run_to_end):
    tasks = [
        t("setup.init", "date +%s.%N"),
        t("build.x", "date +%s.%N; sleep 0.3", deps=["setup.*"]),
        t("build.y", "date +%s.%N; sleep 0.3", deps=["setup.*"]),
        t("final.merge", "date +%s.%N", deps=["build.*"]),
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="chain"))
    assert run.status == Run.Status.COMPLETED
    assert run.started_at and run.finished_at
    by_id = {task.task_id: task for task in run.tasks.all()}
    started = {tid: float(output(task)) for tid, task in by_id.items() if tid != "build.x" and tid != "build.y"}
    build_starts = [float(output(by_id[b]).split()[0]) for b in ("build.x", "build.y")]
    assert started["setup.init"] < min(build_starts)
    assert max(build_starts) < started["final.merge"]
    for task in by_id.values():
        assert task.exit_code == 0 and task.job_id and task.elapsed_seconds is not None
        assert task.script.startswith("#!/bin/bash")


def test_failure_marks_downstream_dep_failed_transitively(user, local_backend, run_to_end):
    tasks = [
        t("a", "exit 3"),
        t("b", deps=["a"]),
        t("c", deps=["b"]),
        t("side"),
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="f"))
    assert run.status == Run.Status.FAILED
    assert states(run) == {"a": "failed", "b": "dep_failed", "c": "dep_failed", "side": "completed"}
    a = run.tasks.get(task_id="a")
    assert a.exit_code == 3 and a.reason == "exit code 3"
    assert run.tasks.get(task_id="b").reason == "dependency 'a' failed"
    # The root cause, not the parent (issue 21 #10).
    assert run.tasks.get(task_id="c").reason == "dependency 'a' failed (via b)"


def test_concurrency_limits_per_run_and_per_backend(user, local_backend):
    local_backend.max_concurrent = 3
    local_backend.save()
    first = create_run(
        owner=user,
        backend=local_backend,
        payload=[t(f"a{i}", "sleep 3") for i in range(5)],
        workflow_name="one",
        max_concurrent=2,
    )
    second = create_run(
        owner=user,
        backend=local_backend,
        payload=[t(f"b{i}", "sleep 3") for i in range(5)],
        workflow_name="two",
        max_concurrent=5,
    )
    tick_due_backends(force=True)
    active = dict(
        Task.objects.filter(state__in=ACTIVE).values_list("run").annotate(n=Count("id")).values_list("run", "n")
    )
    assert active == {first.pk: 2, second.pk: 1}
    cancel_run(first)
    cancel_run(second)
    tick_due_backends(force=True)


def test_cancel_stops_pending_and_running_tasks(user, local_backend, tmp_path):
    marker = tmp_path / "finished"
    tasks = [t("long", f"sleep 30; touch {marker}"), t("later", deps=["long"])]
    run = create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="c")
    tick_due_backends(force=True)
    deadline = time.monotonic() + 10
    while run.tasks.get(task_id="long").state != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        tick_due_backends(force=True)
    job_id = run.tasks.get(task_id="long").job_id
    cancel_run(run)
    tick_due_backends(force=True)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.finished_at
    assert states(run) == {"long": "cancelled", "later": "cancelled"}
    deadline = time.monotonic() + 10  # the job's process group gets SIGTERM; its runner records the end
    while (status := get_adapter(local_backend).poll([job_id]).statuses[job_id]).state != "cancelled":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert not marker.exists()
    with pytest.raises(actions.RunStateError):
        cancel_run(run)


def test_cancel_keeps_who_cancelled_on_the_run(user, local_backend):
    run = create_run(owner=user, backend=local_backend, payload=[t("a")], workflow_name="c")
    cancel_run(run, by=user)
    assert Run.objects.get(pk=run.pk).cancelled_by == user.username


def test_the_scheduler_is_told_who_cancelled_from_the_run_itself(user, local_backend, monkeypatch):
    run = create_run(owner=user, backend=local_backend, payload=[t("long", "sleep 30")], workflow_name="c")
    tick_due_backends(force=True)
    # Cancelled as cancel_run does it, but with no audit event: the engine reads the run only.
    Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED, cancelled_by="carol")
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.RUN_CANCELLED).exists()
    adapter = get_adapter(local_backend)
    told: dict[str, str] = {}
    monkeypatch.setattr(adapter, "cancel_with_reasons", told.update)
    cancel.cancel_requested(local_backend, adapter, set())
    assert told == {run.tasks.get().job_id: f"run {run.pk} cancelled by carol"}
    adapter.cancel(list(told))  # the job itself, which the recording above did not stop


def test_time_limit_fails_the_task(user, local_backend, run_to_end):
    run = run_to_end(
        create_run(
            owner=user, backend=local_backend, payload=[t("slow", "sleep 30", time_limit="0:02")], workflow_name="tl"
        )
    )
    task = run.tasks.get()
    assert task.state == "failed" and task.reason == "time limit exceeded"
    assert task.elapsed_seconds is not None and task.elapsed_seconds < 10


def test_environment_priority_and_quoting(user, local_backend, run_to_end):
    Environment.objects.create(name="py", variables={"A": "from-env", "B": "from-env"}, extra_init="export C=init")
    tricky = 'it\'s $(touch /tmp/scripthut-pwned) `id` "q"'
    tasks = [
        t(
            "show",
            'echo "$A|$B|$C|$SCRIPTHUT_WORKFLOW|$SCRIPTHUT_RUN_ID"; printf "%s" "$TRICKY"',
            environment="py",
            env_vars={"B": "from-task", "TRICKY": tricky},
        ),
        t("ghost", "true", environment="nope"),
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="envs"))
    assert run.status == Run.Status.COMPLETED
    lines = output(run.tasks.get(task_id="show")).split("\n", 1)
    assert lines[0] == f"from-env|from-task|init|envs|{run.pk}"
    assert lines[1] == tricky
    assert not Path("/tmp/scripthut-pwned").exists()
    assert run.warnings == ["task 'ghost': unknown environment 'nope'; its script has no environment setup"]


def test_failed_cd_fails_the_task(user, local_backend, run_to_end, tmp_path):
    run = run_to_end(
        create_run(
            owner=user,
            backend=local_backend,
            workflow_name="cd",
            payload=[t("x", f"touch {tmp_path}/ran", working_dir=str(tmp_path / "missing"))],
        )
    )
    assert states(run) == {"x": "failed"}
    assert not (tmp_path / "ran").exists()
    assert "cannot cd to" in Path(log_path(run.tasks.get(), "error")).read_text()


def test_retries_resubmit_a_failed_task(user, local_backend, run_to_end, tmp_path):
    flaky = f"if [ -f {tmp_path}/once ]; then echo ok; else touch {tmp_path}/once; exit 1; fi"
    run = run_to_end(
        create_run(
            owner=user,
            backend=local_backend,
            workflow_name="r",
            payload=[t("flaky", flaky, retries=2), t("after", deps=["flaky"])],
        )
    )
    assert run.status == Run.Status.COMPLETED
    assert run.tasks.get(task_id="flaky").attempt == 1


def test_relaunch_requeues_only_unsuccessful_tasks(user, local_backend, run_to_end, tmp_path):
    gate = tmp_path / "gate"
    tasks = [t("ok", f"echo once >> {tmp_path}/ok-runs"), t("gated", f"test -f {gate}"), t("child", deps=["gated"])]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="rl"))
    assert states(run) == {"ok": "completed", "gated": "failed", "child": "dep_failed"}
    gate.touch()
    assert relaunch_run(run) == 2
    run = run_to_end(run)
    assert run.status == Run.Status.COMPLETED
    assert (tmp_path / "ok-runs").read_text() == "once\n"  # the completed task was kept, not re-run
    with pytest.raises(actions.RunStateError, match="nothing to relaunch"):
        relaunch_run(run)


def test_relaunch_of_an_active_run_is_refused(user, local_backend):
    run = create_run(owner=user, backend=local_backend, payload=[t("a")], workflow_name="x")
    with pytest.raises(actions.RunStateError, match="still pending"):
        relaunch_run(run)


def write_json(path: Path, tasks: list[dict]) -> Path:
    import json

    path.write_text(json.dumps({"tasks": tasks}))
    return path


def allow(backend: Backend, *paths: Path) -> None:
    """Let the backend's tasks write files in these directories besides their run's own."""
    backend.settings = {**backend.settings, "allowed_paths": [str(path) for path in paths]}
    backend.save()


def test_generates_source_appends_tasks(user, local_backend, run_to_end, tmp_path):
    allow(local_backend, tmp_path)  # the generated file is written in tmp_path
    generated = [
        t("sim-1", "echo 1", deps=["setup"]),
        t("sim-2", "echo 2", deps=["setup", "plan"]),
        t("aggregate", "echo agg", deps=["sim-*"]),
    ]
    source = write_json(tmp_path / "template.json", generated)
    tasks = [
        t("plan", f"cp {source} tasks.json", working_dir=str(tmp_path), generates_source="tasks.json"),
        t("setup", "sleep 1"),
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="gen"))
    assert run.status == Run.Status.COMPLETED, states(run)
    assert states(run) == dict.fromkeys(["plan", "setup", "sim-1", "sim-2", "aggregate"], "completed")
    assert run.tasks.get(task_id="aggregate").generated_by == "plan"
    assert list(run.tasks.order_by("position").values_list("task_id", flat=True))[:2] == ["plan", "setup"]


@pytest.mark.parametrize(
    ("generated", "problem"),
    [
        ([t("x", deps=["ghost"])], "dependency 'ghost' matches no task"),
        ([t("setup")], "duplicate task id 'setup'"),
        ([t("x", deps=["y"]), t("y", deps=["x"])], "dependency cycle: x -> y -> x"),
    ],
)
def test_rejected_generated_batch_fails_the_generator(user, local_backend, run_to_end, tmp_path, generated, problem):
    allow(local_backend, tmp_path)
    source = write_json(tmp_path / "template.json", generated)
    tasks = [
        t("plan", f"cp {source} tasks.json", working_dir=str(tmp_path), generates_source="tasks.json"),
        t("setup"),
        t("after-plan", deps=["plan"]),
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="gen"))
    assert states(run) == {"plan": "failed", "setup": "completed", "after-plan": "dep_failed"}
    assert problem in run.error and "rejected" in run.error
    assert problem in run.tasks.get(task_id="plan").reason


def test_workflow_command_and_dry_run(user, local_backend, run_to_end, tmp_path):
    source = write_json(tmp_path / "wf.json", [t("one", "echo hi"), t("two", deps=["one"])])
    workflow = Workflow.objects.create(name="wf", backend=local_backend, command=f"cat {source}", max_concurrent=1)
    checked, git = dry_run(workflow)
    assert [r.definition.id for r in checked.tasks] == ["one", "two"] and git is None
    run = run_to_end(start_run(workflow, user))
    assert run.status == Run.Status.COMPLETED and run.max_concurrent == 1 and run.workflow == workflow
    broken = Workflow.objects.create(name="broken", backend=local_backend, command="echo oops >&2; exit 4")
    with pytest.raises(WorkflowError, match="command exited with 4: oops"):
        start_run(broken, user)
    assert Run.objects.count() == 1


def test_git_workflow_runs_in_the_checkout(user, local_backend, run_to_end, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    write_json(repo / "tasks.json", [t("where", "pwd; echo $SCRIPTHUT_GIT_SHA", working_dir="sub")])
    (repo / "sub").mkdir()
    (repo / "sub" / "keep").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "tasks"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    workflow = Workflow.objects.create(
        name="gitwf",
        backend=local_backend,
        command="cat tasks.json",
        git={"repo": str(repo), "branch": "main", "clone_dir": str(tmp_path / "clones")},
    )
    run = run_to_end(start_run(workflow, user))
    assert run.status == Run.Status.COMPLETED and run.git_sha == sha
    assert output(run.tasks.get()).split() == [str(tmp_path / "clones" / sha / "sub"), sha]


def test_interrupted_submit_is_reconciled_without_double_submission(user, local_backend, run_to_end, tmp_path):
    """A tick killed between handing jobs to the backend and recording their ids."""
    counter = tmp_path / "count"
    run = create_run(
        owner=user,
        backend=local_backend,
        workflow_name="crash",
        payload=[t("a", f"echo a >> {counter}"), t("b", f"echo b >> {counter}")],
    )
    adapter = get_adapter(local_backend)
    claimed = claim.claim_ready(run, 10, adapter, {})
    assert [task.task_id for task, _, _ in claimed] == ["a", "b"]
    # "a" reached the backend, then the worker died: nothing was recorded.
    adapter.submit([(spec, script) for task, spec, script in claimed if task.task_id == "a"])
    assert states(run) == {"a": "submitting", "b": "submitting"}
    run = run_to_end(run)
    assert run.status == Run.Status.COMPLETED
    assert sorted(counter.read_text().split()) == ["a", "b"]  # each ran exactly once
    a = run.tasks.get(task_id="a")
    assert a.job_id == a.submit_tag


def test_a_task_is_claimed_by_one_actor_only(user, local_backend):
    run = create_run(owner=user, backend=local_backend, workflow_name="x", payload=[t("a")])
    adapter = get_adapter(local_backend)
    first = claim.claim_ready(run, 10, adapter, {})
    second = claim.claim_ready(run, 10, adapter, {})
    assert len(first) == 1 and second == []


def test_unreachable_backend_keeps_runs_waiting(user, db):
    backend = Backend.objects.create(
        name="hpc", kind=Backend.Kind.SLURM, settings={"ssh": {"host": "127.0.0.1", "port": 1, "user": "nobody"}}
    )
    run = create_run(owner=user, backend=backend, payload=[t("a")], workflow_name="w")
    tick_due_backends(force=True)
    backend.refresh_from_db()
    assert backend.status == Backend.Status.UNREACHABLE
    assert backend.status_message == "connection refused by 127.0.0.1:1"
    assert states(run) == {"a": "pending"}


def test_unknown_job_fails_only_after_grace(user, local_backend, settings, time_machine):
    settings.SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS = 300
    run = create_run(owner=user, backend=local_backend, payload=[t("a", "sleep 5")], workflow_name="w")
    tick_due_backends(force=True)
    Task.objects.filter(run=run).update(job_id="sh-never-existed")
    time_machine.move_to(timezone.now(), tick=False)
    tick_due_backends(force=True)
    assert states(run) == {"a": "running"}  # a local job runs once submitted; now unknown, within the grace
    time_machine.shift(timedelta(seconds=299))
    tick_due_backends(force=True)
    assert states(run) == {"a": "running"}  # still within the grace
    time_machine.shift(timedelta(seconds=2))
    tick_due_backends(force=True)
    task = run.tasks.get()
    assert task.state == "failed" and "unknown to the scheduler" in task.reason


def _scripted_poll(answers: dict[str, tuple[JobState, int | None]]) -> PollResult:
    return PollResult(
        {
            job_id: JobStatus(
                job_id, state, exit_code=code, never_started=state in (JobState.FAILED, JobState.CANCELLED)
            )
            for job_id, (state, code) in answers.items()
        }
    )


def _held_chain(user: User, backend: Backend, parent: str) -> Run:
    """``parent`` running as job j-<parent>; ``child`` and ``grandchild`` held on it (afterok)."""
    run = create_run(
        owner=user,
        backend=backend,
        workflow_name="held",
        payload=[t(parent), t("child", deps=[parent]), t("grandchild", deps=["child"])],
    )
    Task.objects.filter(run=run, task_id=parent).update(state="running", job_id=f"j-{parent}")
    for task_id in ("child", "grandchild"):
        Task.objects.filter(run=run, task_id=task_id).update(state="submitted", job_id=f"j-{task_id}", native_deps=True)
    return run


def test_held_jobs_dropped_before_their_parent_ends_wait_for_its_fate(user, local_backend, monkeypatch):
    """Slurm drops jobs held on a failed parent (kill-on-invalid-dep) while the parent still
    shows COMPLETING: they are dep_failed once the parent's failure is known, never
    `cancelled`. Scheduler states are scripted here; tests/test_slurm.py has the real one."""
    run = _held_chain(user, local_backend, "bad")
    adapter = get_adapter(local_backend)
    dropped = {"j-child": (JobState.CANCELLED, None), "j-grandchild": (JobState.CANCELLED, None)}

    monkeypatch.setattr(adapter, "poll", lambda ids: _scripted_poll({"j-bad": (JobState.RUNNING, None), **dropped}))
    poll.poll_jobs(local_backend, adapter, set())
    assert states(run) == {"bad": "running", "child": "submitted", "grandchild": "submitted"}

    monkeypatch.setattr(adapter, "poll", lambda ids: _scripted_poll({"j-bad": (JobState.FAILED, 3), **dropped}))
    poll.poll_jobs(local_backend, adapter, set())
    assert states(run) == {"bad": "failed", "child": "dep_failed", "grandchild": "dep_failed"}
    assert run.tasks.get(task_id="grandchild").reason == "dependency 'bad' failed (via child)"


def test_held_chain_dropped_after_its_parent_completed_is_queued_again(user, local_backend, monkeypatch):
    """A parent that completed and left the scheduler's memory before its held children were
    matched (a PBS race): the held chain is queued again, none of it dep_failed."""
    run = _held_chain(user, local_backend, "parent")
    adapter = get_adapter(local_backend)
    answers = {
        "j-parent": (JobState.COMPLETED, 0),
        "j-child": (JobState.CANCELLED, None),
        "j-grandchild": (JobState.CANCELLED, None),
    }
    monkeypatch.setattr(adapter, "poll", lambda ids: _scripted_poll(answers))
    poll.poll_jobs(local_backend, adapter, set())
    assert states(run) == {"parent": "completed", "child": "pending", "grandchild": "submitted"}
    assert "queued again" in run.tasks.get(task_id="child").reason


def log_path(task: Task, stream: str) -> str:
    """Where the local backend put a task's output or error stream."""
    return get_adapter(task.run.backend).log_location(task_log(task, stream))
