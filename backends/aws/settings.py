"""The ``aws:`` block shared by the AWS backends (Batch, EC2)."""

from __future__ import annotations

from pydantic import Field

from backends.schema import ConfigModel


class AwsSettings(ConfigModel):
    profile: str | None = None
    region: str = Field(min_length=1)
    # An emulator or LocalStack (e.g. http://127.0.0.1:5000). Unset: botocore's own
    # choice, which honours the standard AWS_ENDPOINT_URL environment variable.
    endpoint_url: str | None = None
