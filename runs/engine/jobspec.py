"""How a task becomes a job for its backend: its environment, directory and logs."""

from __future__ import annotations

from backends.base import BackendAdapter, JobSpec, TaskLog
from backends.models import Environment
from runs.models import Run, Task


def build_job_spec(
    task: Task, run: Run, environments: dict[str, Environment], adapter: BackendAdapter, tag: str
) -> JobSpec:
    """Environment variables merge as in the original: ScriptHut's < the named
    environment's < the task's own ``env_vars``."""
    env = {
        "SCRIPTHUT_WORKFLOW": run.workflow_name,
        "SCRIPTHUT_RUN_ID": run.pk,
        "SCRIPTHUT_CREATED_AT": run.created_at.replace(microsecond=0).isoformat(),
    }
    if run.git_sha:
        env |= {
            "SCRIPTHUT_GIT_REPO": run.git_repo,
            "SCRIPTHUT_GIT_BRANCH": run.git_branch,
            "SCRIPTHUT_GIT_SHA": run.git_sha,
        }
    extra_init = ""
    environment = environments.get(task.environment) if task.environment else None
    if environment:
        env |= {k: str(v) for k, v in environment.variables.items()}
        extra_init = environment.extra_init
    env |= task.env_vars
    spec = JobSpec(
        tag=tag,
        run_id=run.pk,
        task_id=task.task_id,
        name=task.name,
        command=task.command,
        working_dir=resolve_working_dir(task.working_dir, run.clone_dir),
        partition=task.partition,
        cpus=task.cpus,
        memory=task.memory,
        time_limit=task.time_limit,
        env=env,
        extra_init=extra_init,
        output_file=task.output_file,
        error_file=task.error_file,
        gres=task.gres,
        image=task.image,
        generates_source=task.generates_source,
    )
    spec.output_file = spec.output_file or adapter.default_log_path(spec, "out")
    spec.error_file = spec.error_file or adapter.default_log_path(spec, "err")
    return spec


def resolve_working_dir(working_dir: str, clone_dir: str) -> str:
    """Git workflows: ``~`` means the checkout and relative paths are inside it."""
    if not clone_dir:
        return working_dir
    if working_dir in ("", "~"):
        return clone_dir
    if working_dir.startswith(("/", "~")):
        return working_dir
    return f"{clone_dir.rstrip('/')}/{working_dir}"


def task_log(task: Task, stream: str) -> TaskLog:
    """A task's ``output`` or ``error`` stream as recorded at submission; the backend
    knows where that is (``adapter.log_location``) and how to read it (``read_log``)."""
    path = task.output_file if stream == "output" else task.error_file
    return TaskLog(
        job_id=task.job_id,
        stream=stream,
        path=path,
        working_dir=resolve_working_dir(task.working_dir, task.run.clone_dir),
        run_id=task.run_id,
    )
