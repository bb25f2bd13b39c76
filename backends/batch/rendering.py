"""A task as an AWS Batch job: its script and the ``submit_job`` arguments.

There is no shared filesystem: the script runs in a fresh container. Environment
variables travel through ``containerOverrides.environment`` (the script only lists
their names), and a git run clones its commit inside the container first.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from backends.base import JobSpec
from backends.scripts import shell_path
from backends.units import parse_duration, parse_memory_mb

# Where a git run's commit is checked out inside the container (``run.clone_dir``).
CONTAINER_CHECKOUT = "/tmp/scripthut/checkout"  # noqa: S108  (in the job's own container)
MIN_TIMEOUT_SECONDS = 60  # Batch refuses shorter attemptDurationSeconds
GPU_GRES = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?:(\d+)$")
DEFAULT_PARTITION = "normal"  # a task's partition when it names none: use aws.job_queue
JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
TAG_VALUE_UNSAFE = re.compile(r"[^\w .:/=+@-]")  # what AWS allows in a tag value

GIT_CHECKOUT = f"""if [ -n "${{SCRIPTHUT_GIT_SHA:-}}" ]; then
    # No shared filesystem: fetch the run's commit (resolved on the portal) in the container.
    rm -rf {CONTAINER_CHECKOUT}
    git clone --quiet "$SCRIPTHUT_GIT_REPO" {CONTAINER_CHECKOUT} \\
        && git -C {CONTAINER_CHECKOUT} checkout --quiet "$SCRIPTHUT_GIT_SHA" \\
        || {{ echo "scripthut: cannot check out $SCRIPTHUT_GIT_SHA of $SCRIPTHUT_GIT_REPO" >&2; exit 1; }}
fi"""


def render(job: JobSpec) -> str:
    """The job's bash script; ``resource_requirements`` is called too, so that a task
    Batch cannot run (a gres other than gpu:N) fails at render time with the reason."""
    resource_requirements(job)
    return container_script(job, "AWS Batch")


def container_script(job: JobSpec, service: str) -> str:
    """The script a container runs for a job (Batch and ECS): the git checkout, the
    environment's init, then the command in its working directory. Environment values
    travel in containerOverrides.environment, never in the script: it names them only."""
    lines = [
        "#!/bin/bash",
        f"# scripthut task {shlex.quote(job.task_id)} of run {job.run_id} (tag {job.tag}) on {service}",
    ]
    if job.env:
        lines.append("# environment (containerOverrides): " + " ".join(sorted(job.env)))
    if "SCRIPTHUT_GIT_SHA" in job.env:
        lines += ["", GIT_CHECKOUT]
    if job.extra_init.strip():
        lines += ["", job.extra_init.rstrip("\n")]
    message = shlex.quote(f"scripthut: cannot cd to {job.working_dir}")
    lines += ["", f"cd {shell_path(job.working_dir)} || {{ echo {message} >&2; exit 1; }}", job.command, ""]
    return "\n".join(lines)


def resource_requirements(job: JobSpec) -> list[dict[str, str]]:
    requirements = [
        {"type": "VCPU", "value": str(job.cpus)},
        {"type": "MEMORY", "value": str(parse_memory_mb(job.memory))},
    ]
    if job.gres:
        match = GPU_GRES.match(job.gres.strip())
        if not match:
            raise ValueError(f"gres {job.gres!r}: AWS Batch only takes GPUs, as gpu:N")
        if int(match.group(1)) > 0:
            requirements.append({"type": "GPU", "value": match.group(1)})
    return requirements


def job_name(job: JobSpec) -> str:
    """``<tag>_<name>``: the tag first, so that reconciling can list a run's jobs by prefix."""
    name = JOB_NAME_UNSAFE.sub("_", job.name).strip("_") or "task"
    return f"{job.tag}_{name}"[:128]


def job_queue(job: JobSpec, default_queue: str) -> str:
    partition = job.partition.strip()
    return partition if partition and partition != DEFAULT_PARTITION else default_queue


def submit_arguments(job: JobSpec, script: str, definition: str, queue: str, attempts: int) -> dict[str, Any]:
    """The keyword arguments of ``batch.submit_job`` for one job."""
    arguments: dict[str, Any] = {
        "jobName": job_name(job),
        "jobQueue": queue,
        "jobDefinition": definition,
        "containerOverrides": {
            "command": ["bash", "-c", script],
            "environment": [{"name": k, "value": v} for k, v in job.env.items()],
            "resourceRequirements": resource_requirements(job),
        },
        "retryStrategy": {"attempts": attempts},
        "tags": {
            "scripthut:tag": job.tag,
            "scripthut:run": job.run_id,
            # Task ids are free text; a tag value is not: the job name and tag carry the tag.
            "scripthut:task": TAG_VALUE_UNSAFE.sub("_", job.task_id)[:256],
        },
    }
    seconds = parse_duration(job.time_limit)
    if seconds >= MIN_TIMEOUT_SECONDS:
        arguments["timeout"] = {"attemptDurationSeconds": seconds}
    return arguments
