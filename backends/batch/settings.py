"""Settings of a ``batch`` (AWS Batch) backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
    log_group: str = "/aws/batch/job"
    max_concurrent: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _needs_a_job_definition(self) -> BatchSettings:
        if not self.job_definition and not self.default_image:
            raise ValueError("either job_definition or default_image must be set")
        return self


Settings = BatchSettings
