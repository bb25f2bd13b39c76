"""What an ECS backend needs in moto's server (tests/aws.py), and driving its tasks.

Checked facts (/work/shared/notes/ecs-and-site-limits.md): a Fargate task needs subnets
and security groups, a VPC with DNS hostnames on, and container-level cpu/memory in its
task definition. moto starts every task RUNNING; its state manager moves tasks on
(``ecs::task``): ``hold_tasks`` keeps them RUNNING, ``stop_tasks_at_once`` makes the next
DescribeTasks show them STOPPED (exit code 0). A non-zero exit code or a stoppedReason
cannot be set over moto's API: :func:`finish_task` sets them on the emulator's task
object, as the server runs in this process.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moto.ecs import models as ecs_models

from tests.aws import ACCOUNT, IMAGE, REGION, MotoServer

CLUSTER = "scripthut-cluster"
FAMILY = "scripthut-template"
LOG_GROUP = "/ecs/template"


@dataclass
class EcsWorld:
    cluster: str
    subnet: str
    security_group: str
    task_definition: str  # a family with one container "app", logging to LOG_GROUP

    def settings(self, server: MotoServer, **keys: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "aws": {"region": REGION, "endpoint_url": server.url},
            "cluster": self.cluster,
            "subnets": [self.subnet],
            "security_groups": [self.security_group],
        }
        settings.update(keys if keys else {"task_definition": self.task_definition})
        return settings


def ecs_world(server: MotoServer) -> EcsWorld:
    ec2, ecs = server.client("ec2"), server.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="ecs", Description="ecs", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(
        family=FAMILY,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": "app",
                "image": IMAGE,
                "essential": True,
                "cpu": 256,
                "memory": 512,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": LOG_GROUP, "awslogs-region": REGION, "awslogs-stream-prefix": "tpl"},
                },
            }
        ],
    )
    return EcsWorld(CLUSTER, subnet, group, FAMILY)


def set_transition(server: MotoServer, transition: dict[str, Any]) -> None:
    body = json.dumps({"model_name": "ecs::task", "transition": transition}).encode()
    request = urllib.request.Request(f"{server.url}/moto-api/state-manager/set-transition", body, method="POST")
    urllib.request.urlopen(request, timeout=10)


def hold_tasks(server: MotoServer) -> None:
    """Tasks stay RUNNING (until finish_task or StopTask)."""
    set_transition(server, {"progression": "manual", "times": 10**9})


def stop_tasks_at_once(server: MotoServer) -> None:
    """The next DescribeTasks shows every task STOPPED (exit code 0)."""
    set_transition(server, {"progression": "immediate"})


def emulator_tasks() -> dict[str, Any]:
    return dict(ecs_models.ecs_backends[ACCOUNT][REGION].tasks.get(CLUSTER, {}))


def moto_task(arn: str) -> Any:
    task = emulator_tasks().get(arn)
    assert task is not None, f"no task {arn} in the emulator"
    return task


def finish_task(arn: str, exit_code: int = 0, reason: str = "") -> None:
    """End a task as ECS reports it: STOPPED, the container's exit code, the reason."""
    task = moto_task(arn)
    task.containers[0].exitCode = exit_code
    task.stopped_reason = reason
    task.status = "STOPPED"


def write_log(server: MotoServer, group: str, stream: str, lines: tuple[str, ...]) -> None:
    logs = server.client("logs")
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(datetime.now().timestamp() * 1000)
    events = [{"timestamp": now, "message": line} for line in lines]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
