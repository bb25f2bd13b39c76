"""Settings of a ``pbs`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from backends.ssh.settings import SshSchedulerSettings


class PbsSettings(SshSchedulerSettings):
    type: Literal["pbs"]
    example = {"ssh": {"host": "login.example"}}
    queue: str | None = None


Settings = PbsSettings
