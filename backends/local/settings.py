"""Settings of a ``local`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backends.schema import BackendSettings


class LocalSettings(BackendSettings):
    """Runs tasks as processes on the portal host (ours; not in the original product)."""

    type: Literal["local"]
    max_concurrent: int = Field(default=4, ge=1)
    poll_interval: int = Field(default=2, ge=1)
    log_dir: str | None = None


Settings = LocalSettings
