"""The AWS API emulator for tests: moto's server on a free loopback port, over real HTTP.

``moto_server`` starts ``ThreadedMotoServer`` inside the test process, so a test can
drive AWS Batch job states directly (the notes in /work/shared/notes/aws-testing.md):
``Job.run`` is replaced by a no-op, so a job stays SUBMITTED until the test moves it
with :func:`start_job` / :func:`finish_job`. boto3 in the code under test reaches it
through the endpoint URL like any AWS endpoint. ``batch_world`` builds what a Batch
backend needs (role, network, compute environment, queue, job definition).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.batch import models as batch_models
from moto.server import ThreadedMotoServer

from tests.services import free_port

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
IMAGE = "public.ecr.aws/docker/library/bash:5"


@dataclass
class MotoServer:
    url: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)


@pytest.fixture(scope="session", name="moto_url")
def moto_url_fixture() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(name="moto_server")
def moto_server_fixture(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoServer]:
    """A clean emulator; fake credentials in the environment and no ~/.aws files read."""
    monkeypatch.setattr(batch_models.Job, "run", lambda self: None)  # jobs wait for the test
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    server = MotoServer(moto_url)
    server.reset()
    yield server
    server.reset()


@dataclass
class BatchWorld:
    queue: str
    job_definition: str  # its name
    job_definition_arn: str
    compute_environment: str


def batch_world(server: MotoServer, queue: str = "scripthut-queue", image: str = IMAGE) -> BatchWorld:
    """A role, a VPC, a compute environment (VALID), a queue (ENABLED), a job definition."""
    iam, ec2, batch = server.client("iam"), server.client("ec2"), server.client("batch")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}]}  # fmt: skip  # noqa: E501
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="batch", Description="batch", VpcId=vpc)["GroupId"]
    environment = batch.create_compute_environment(
        computeEnvironmentName="scripthut-ce",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "FARGATE",
            "maxvCpus": 64,
            "subnets": [subnet],
            "securityGroupIds": [group],
        },
        serviceRole=role,
    )["computeEnvironmentArn"]
    order = [{"order": 1, "computeEnvironment": environment}]
    batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1, computeEnvironmentOrder=order)
    definition = batch.register_job_definition(
        jobDefinitionName="scripthut-template",
        type="container",
        containerProperties={
            "image": image,
            "command": ["true"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            "jobRoleArn": f"arn:aws:iam::{ACCOUNT}:role/job-role",
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/aws/batch/job"}},
        },
        retryStrategy={"attempts": 2},
        tags={"team": "research"},
    )
    return BatchWorld(queue, "scripthut-template", definition["jobDefinitionArn"], environment)


# -- driving jobs (the emulator runs none itself) ------------------------------------------


def moto_job(job_id: str) -> Any:
    job = batch_models.batch_backends[ACCOUNT][REGION].get_job_by_id(job_id)
    assert job is not None, f"no job {job_id} in the emulator"
    return job


def start_job(server: MotoServer, job_id: str, log_lines: tuple[str, ...] = ()) -> str:
    """Move a job to RUNNING with a log stream (and these lines in it); returns the stream."""
    job = moto_job(job_id)
    job.job_started_at = datetime.now()
    job.log_stream_name = f"{job.job_definition.name}/default/{job_id}"
    job.status = "RUNNING"
    job._start_attempt()
    logs = server.client("logs")
    try:
        logs.create_log_group(logGroupName="/aws/batch/job")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=job.log_stream_name)
    if log_lines:
        write_log(server, job.log_stream_name, log_lines)
    return str(job.log_stream_name)


def write_log(server: MotoServer, stream: str, lines: tuple[str, ...]) -> None:
    now = int(datetime.now().timestamp() * 1000)
    events = [{"timestamp": now, "message": line} for line in lines]
    server.client("logs").put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=events)


def finish_job(job_id: str, exit_code: int = 0, reason: str | None = None) -> None:
    """End a started job as real Batch reports it: the exit code on the container and the attempt."""
    job = moto_job(job_id)
    if job.latest_attempt is None:
        job._start_attempt()
    job.exit_code = exit_code
    assert job.latest_attempt is not None
    job.latest_attempt["container"]["exitCode"] = exit_code
    if reason is not None:
        job.job_stopped_reason = reason
    job._mark_stopped(success=exit_code == 0)
