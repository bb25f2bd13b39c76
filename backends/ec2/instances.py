"""The EC2 calls of the backend: launch, find, terminate task instances.

Every instance carries tags under ``tag_prefix``: ``<prefix>:backend`` (the backend's
name: how the reconciler finds its own), ``:run``, ``:task`` and ``:tag`` (the submit
tag: how an interrupted launch is found again). The submit tag is also the launch's
ClientToken, so a launch retried after a crash cannot start a second instance on AWS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3

from backends.aws.clients import aws_errors, client
from backends.base import JobSpec
from backends.ec2.settings import Ec2Settings

LIVE_STATES = ("pending", "running")
FILTER_VALUES_MAX = 200  # values per DescribeInstances filter
TAG_VALUE_MAX = 256


@dataclass
class Instance:
    id: str
    state: str
    instance_type: str = ""
    launch_time: datetime | None = None
    state_reason: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def instance_type_for(settings: Ec2Settings, partition: str) -> str:
    """The instance type of a task's partition (the ``default`` entry for any other)."""
    types = settings.instance_types
    return types.get(partition) or types.get("default") or "c5.xlarge"


def count_calls(boto_client: Any, calls: Counter[str]) -> Any:
    """Count every API call the client makes (by operation name), for the benchmark."""

    def before_call(model: Any, **_: Any) -> None:
        calls[f"{boto_client.meta.service_model.service_name}:{model.name}"] += 1

    boto_client.meta.events.register("before-call", before_call)
    return boto_client


class Ec2Instances:
    """This backend's instances, through one EC2 client."""

    def __init__(self, settings: Ec2Settings, backend_name: str, boto_session: boto3.Session, calls: Counter[str]):
        self.settings = settings
        self.backend_name = backend_name
        self.ec2 = count_calls(client(settings.aws, "ec2", boto_session), calls)
        self.doomed: list[str] = []  # to terminate at the end of the poll, in one call

    def tag_key(self, name: str) -> str:
        return f"{self.settings.tag_prefix}:{name}"

    def ours(self, states: Sequence[str] | None = None) -> list[Instance]:
        """Every instance of this backend (in ``states``; terminated ones stay listed for
        about an hour): one call per 1,000 instances."""
        filters = [{"Name": f"tag:{self.tag_key('backend')}", "Values": [self.backend_name]}]
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        return self._describe(filters)

    def with_tags(self, tags: Sequence[str]) -> list[Instance]:
        """Instances (in any state) launched for these submit tags."""
        return self._of_backend(f"tag:{self.tag_key('tag')}", tags)

    def with_ids(self, instance_ids: Sequence[str]) -> list[Instance]:
        """These instances of the backend, in any state (an id it does not have is left out)."""
        return self._of_backend("instance-id", instance_ids)

    def _of_backend(self, name: str, values: Sequence[str]) -> list[Instance]:
        found: list[Instance] = []
        for start in range(0, len(values), FILTER_VALUES_MAX):
            chunk = list(values[start : start + FILTER_VALUES_MAX])
            found += self._describe(
                [
                    {"Name": f"tag:{self.tag_key('backend')}", "Values": [self.backend_name]},
                    {"Name": name, "Values": chunk},
                ]
            )
        return found

    def _describe(self, filters: list[dict[str, Any]]) -> list[Instance]:
        instances: list[Instance] = []
        with aws_errors("ec2 DescribeInstances"):
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters, MaxResults=1000):
                for reservation in page.get("Reservations", []):
                    instances += [to_instance(raw) for raw in reservation.get("Instances", [])]
        return instances

    def launch(self, job: JobSpec, user_data: str) -> str:
        """Start the task's instance; its id. BackendError/BackendUnavailable from AWS."""
        params: dict[str, Any] = {
            "ImageId": self.settings.ami,
            "InstanceType": instance_type_for(self.settings, job.partition),
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": self.settings.subnet_id,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "UserData": user_data,
            "ClientToken": job.tag[:64],
            "MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": self.tags_for(job)}],
        }
        if self.settings.security_group_ids:
            params["SecurityGroupIds"] = self.settings.security_group_ids
        if self.settings.instance_profile_arn:
            params["IamInstanceProfile"] = {"Arn": self.settings.instance_profile_arn}
        with aws_errors("ec2 RunInstances"):
            response = self.ec2.run_instances(**params)
        return str(response["Instances"][0]["InstanceId"])

    def tags_for(self, job: JobSpec) -> list[dict[str, str]]:
        ours = {
            "Name": f"scripthut {job.task_id}",
            self.tag_key("backend"): self.backend_name,
            self.tag_key("run"): job.run_id,
            self.tag_key("task"): job.task_id,
            self.tag_key("tag"): job.tag,
        }
        # Ours win over extra_tags: the reconciler depends on them.
        tags = self.settings.extra_tags | ours
        return [{"Key": key, "Value": value[:TAG_VALUE_MAX]} for key, value in tags.items()]

    def terminate_later(self, instance_id: str) -> None:
        self.doomed.append(instance_id)

    def terminate_doomed(self) -> None:
        doomed, self.doomed = self.doomed, []
        self.terminate(doomed)

    def terminate(self, instance_ids: Sequence[str]) -> None:
        for start in range(0, len(instance_ids), 1000):
            with aws_errors("ec2 TerminateInstances"):
                self.ec2.terminate_instances(InstanceIds=list(instance_ids[start : start + 1000]))


def to_instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", ""),
        instance_type=raw.get("InstanceType", ""),
        launch_time=raw.get("LaunchTime"),
        state_reason=raw.get("StateReason", {}).get("Message", "") or raw.get("StateTransitionReason", ""),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
    )
