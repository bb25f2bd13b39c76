"""Settings of an ``ec2`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from backends.aws.settings import AwsSettings
from backends.schema import BackendSettings


class Ec2Settings(BackendSettings):
    type: Literal["ec2"]
    aws: AwsSettings
    ami: str = Field(min_length=1)
    subnet_id: str = Field(min_length=1)
    security_group_ids: list[str] = Field(default_factory=list)
    instance_types: dict[str, str] = Field(default_factory=lambda: {"default": "c5.xlarge"})
    default_image: str | None = None
    instance_profile_arn: str | None = None
    ssh_user: str = "ec2-user"
    max_instances: int = Field(default=20, ge=1)
    idle_terminate_seconds: int = Field(default=1800, ge=0)
    startup_timeout_seconds: int = Field(default=600, ge=1)
    tag_prefix: str = "scripthut"
    extra_tags: dict[str, str] = Field(default_factory=dict)
    max_concurrent: int = Field(default=20, ge=1)
    # Seconds between two reads of the running instances' sentinels between polls (one SSM
    # SendCommand and a ListCommandInvocations per 50 instances, no EC2 call); 0: at the poll only.
    sentinels_every: float = Field(default=5, ge=0)
    example = {"aws": {"region": "eu-west-1"}, "ami": "ami-1", "subnet_id": "subnet-1"}

    @classmethod
    def priced_as(cls, settings: Mapping[str, Any], partition: str, partitions: Mapping[str, str]) -> tuple[str, bool]:
        # One instance per task, of the type its partition maps to in instance_types.
        types = settings.get("instance_types") or {"default": "c5.xlarge"}
        return types.get(partition) or types.get("default", ""), True

    @model_validator(mode="before")
    @classmethod
    def _max_concurrent_from_max_instances(cls, data: Any) -> Any:
        # One instance per task, so by default as many tasks as instances may run.
        if isinstance(data, dict) and "max_concurrent" not in data and "max_instances" in data:
            data = {**data, "max_concurrent": data["max_instances"]}
        return data


Settings = Ec2Settings
