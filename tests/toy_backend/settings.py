"""Settings of a ``toy`` backend: a directory its jobs' files go to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backends.schema import BackendSettings


class ToySettings(BackendSettings):
    type: Literal["toy"]
    max_concurrent: int = Field(default=2, ge=1)
    job_dir: str = Field(min_length=1)
    example = {"job_dir": "/tmp/toy-jobs"}


Settings = ToySettings
