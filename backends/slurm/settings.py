"""Settings of a ``slurm`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from backends.ssh.settings import SshSchedulerSettings


class SlurmSettings(SshSchedulerSettings):
    type: Literal["slurm"]
    example = {"ssh": {"host": "login.example"}}


Settings = SlurmSettings
