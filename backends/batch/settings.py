"""Settings of a ``batch`` (AWS Batch) backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from backends.aws.settings import AwsSettings
from backends.schema import BackendSettings


class BatchAwsSettings(AwsSettings):
    job_queue: str = Field(min_length=1)


class BatchSettings(BackendSettings):
    type: Literal["batch"]
    aws: BatchAwsSettings
    job_definition: str | None = None
    job_definition_mode: Literal["locked", "revisions"] = "locked"
    default_image: str | None = None
    job_role_arn: str | None = None
    execution_role_arn: str | None = None
    retry_attempts: int = Field(default=1, ge=1, le=10)
    log_group: str = Field(default="/aws/batch/job", min_length=1)
    max_concurrent: int = Field(default=100, ge=1)
    example = {"aws": {"region": "eu-west-1", "job_queue": "jobs"}, "default_image": "busybox"}

    @classmethod
    def priced_as(cls, settings: Mapping[str, Any], partition: str, partitions: Mapping[str, str]) -> tuple[str, bool]:
        # A task's partition is its job queue: when it is not mapped, the queue it was sent to.
        queue = (settings.get("aws") or {}).get("job_queue", "")
        return partitions.get(partition) or partitions.get(queue, ""), False

    @model_validator(mode="after")
    def _exactly_one_job_definition_source(self) -> BatchSettings:
        # Raised on the key itself, so the config error names its path
        # (``backends[0].job_definition: ...``) and not just the backend.
        if self.job_definition and self.default_image:
            key, message = "default_image", "set either job_definition or default_image, not both"
        elif not self.job_definition and not self.default_image:
            key, message = "job_definition", "either job_definition or default_image must be set"
        else:
            return self
        error = InitErrorDetails(
            type=PydanticCustomError("value_error", message), loc=(key,), input=None, ctx={"error": message}
        )
        raise ValidationError.from_exception_data(type(self).__name__, [error])


Settings = BatchSettings
