"""A task as an ECS task: its script and the ``run_task`` arguments.

As on AWS Batch there is no shared filesystem: the script runs in a fresh container,
environment values travel in ``containerOverrides.environment`` (the script lists only
their names), and a git run clones its commit inside the container first.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from backends.base import JobSpec
from backends.batch.rendering import TAG_VALUE_UNSAFE, container_script
from backends.ecs.settings import EcsSettings
from backends.ecs.sizes import Size, fargate_size
from backends.units import parse_memory_mb

CLIENT_TOKEN_MAX = 64  # RunTask's clientToken length limit
GPU_GRES = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?:(\d+)$")


def render(job: JobSpec) -> str:
    """The job's bash script (``size``'s checks run too, so that a task ECS cannot run
    fails at render time with the reason)."""
    if job.gres:
        raise ValueError(f"gres {job.gres!r}: the ecs backend takes no GPUs or other generic resources")
    return container_script(job, "AWS ECS")


def size(job: JobSpec, launch_type: str) -> Size:
    """What the task asks for; on Fargate, rounded up to a valid size (ValueError if too big)."""
    memory = parse_memory_mb(job.memory)
    if launch_type == "FARGATE":
        return fargate_size(job.cpus, memory)
    return Size(max(job.cpus, 0) * 1024, memory)


def client_token(tag: str) -> str:
    """RunTask's idempotency token: a call retried with it starts no second task."""
    return tag if len(tag) <= CLIENT_TOKEN_MAX else hashlib.sha256(tag.encode()).hexdigest()


def run_task_arguments(
    job: JobSpec, script: str, settings: EcsSettings, definition: str, container: str, task_size: Size
) -> dict[str, Any]:
    """The keyword arguments of ``ecs.run_task`` for one job."""
    override: dict[str, Any] = {
        "name": container,
        "command": ["bash", "-c", script],
        "environment": [{"name": k, "value": v} for k, v in job.env.items()],
    }
    overrides: dict[str, Any] = {"containerOverrides": [override]}
    if settings.launch_type == "FARGATE":
        overrides |= {"cpu": str(task_size.cpu), "memory": str(task_size.memory)}
    else:
        override |= {"cpu": task_size.cpu, "memory": task_size.memory}
    arguments: dict[str, Any] = {
        "cluster": settings.cluster,
        "taskDefinition": definition,
        "launchType": settings.launch_type,
        "count": 1,
        "startedBy": job.tag[:128],
        "clientToken": client_token(job.tag),
        "overrides": overrides,
        "tags": [
            {"key": "scripthut:tag", "value": job.tag},
            {"key": "scripthut:run", "value": job.run_id},
            {"key": "scripthut:task", "value": TAG_VALUE_UNSAFE.sub("_", job.task_id)[:256]},
        ],
    }
    if settings.subnets:
        network = {
            "subnets": settings.subnets,
            "securityGroups": settings.security_groups,
            "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
        }
        arguments["networkConfiguration"] = {"awsvpcConfiguration": network}
    return arguments
