"""The ``aws:`` block shared by the AWS backends (Batch, EC2)."""

from __future__ import annotations

from pydantic import Field

from backends.schema import ConfigModel


class AwsSettings(ConfigModel):
    profile: str | None = None
    region: str = Field(min_length=1)
