"""Settings of an ``ecs`` (AWS ECS, Fargate or EC2 launch type) backend in scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from backends.aws.settings import AwsSettings
from backends.schema import BackendSettings


class EcsSettings(BackendSettings):
    type: Literal["ecs"]
    aws: AwsSettings
    cluster: str = Field(min_length=1)
    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    assign_public_ip: bool = False
    task_definition: str | None = None  # family, family:revision or ARN
    # locked: task_definition as is (another image is ignored, with a warning); revisions: a
    # template, a task image it does not have gets a new revision of its family.
    task_definition_mode: Literal["locked", "revisions"] = "locked"
    container_name: str | None = None  # of task_definition; unset: its first container
    default_image: str | None = None  # ScriptHut registers scripthut-<hash> for it
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    log_group: str = Field(default="/ecs/scripthut", min_length=1)
    max_concurrent: int = Field(default=100, ge=1)
    example = {
        "aws": {"region": "eu-west-1"},
        "cluster": "jobs",
        "subnets": ["subnet-1"],
        "security_groups": ["sg-1"],
        "default_image": "busybox",
    }

    @model_validator(mode="after")
    def _complete(self) -> EcsSettings:
        # Each problem raised on its key, so that the config error names its path.
        problems: list[tuple[str, str]] = []
        if self.task_definition and self.default_image:
            problems.append(("default_image", "set either task_definition or default_image, not both"))
        elif not self.task_definition and not self.default_image:
            problems.append(("task_definition", "either task_definition or default_image must be set"))
        if self.launch_type == "FARGATE":
            # Fargate tasks use awsvpc networking: RunTask needs both.
            if not self.subnets:
                problems.append(("subnets", "at least one subnet is needed for launch_type FARGATE"))
            if not self.security_groups:
                problems.append(("security_groups", "at least one security group is needed for launch_type FARGATE"))
        if not problems:
            return self
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("value_error", message), loc=(key,), input=None, ctx={"error": message}
            )
            for key, message in problems
        ]
        raise ValidationError.from_exception_data(type(self).__name__, errors)


Settings = EcsSettings
