"""Settings of a ``pbs`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

from typing import Literal

from backends.ssh.settings import SshSchedulerSettings


class PbsSettings(SshSchedulerSettings):
    type: Literal["pbs"]
    example = {"ssh": {"host": "login.example"}}
    queue: str | None = None
    # Job arrays (qsub -J, PBS_ARRAY_INDEX) are OpenPBS / PBS Professional's: turn them on
    # for such a server. Off by default, as Torque (-t, PBS_ARRAYID) and Slurm's qsub
    # wrapper (its elements see SLURM_ARRAY_TASK_ID) differ.
    arrays: bool = False


Settings = PbsSettings
