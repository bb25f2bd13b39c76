"""Settings shared by the schedulers reached over SSH (Slurm, PBS)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backends.schema import BackendSettings, ConfigModel


class SshSettings(ConfigModel):
    """The ``ssh:`` block: how to reach the login node."""

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_path: str | None = None
    cert_path: str | None = None
    known_hosts: str | None = None
    allow_unknown_host_keys: bool = False
    # Whose account jobs run under: the one above (shared), or each portal user's own
    # (per_user: users register a username and key on /settings/identities).
    identity: Literal["shared", "per_user"] = "shared"


class SshSchedulerSettings(BackendSettings):
    """What every SSH scheduler backend has; each adds its ``type`` and own keys."""

    ssh: SshSettings
    account: str | None = None
    login_shell: bool = False
    max_concurrent: int = Field(default=100, ge=1)
    clone_dir: str = "~/scripthut-repos"
    log_dir: str = "~/.cache/scripthut/logs"
    # Let the scheduler hold dependent jobs (afterok) instead of waiting in the portal.
    native_dependencies: bool = True
    # Seconds between two reads of the jobs' end markers (one cheap command on the open
    # connection, no scheduler query); 0: ends are seen only at the scheduler's poll.
    end_markers_every: float = Field(default=5, ge=0)
    # With end markers on: keep one command open on the connection that wakes the portal the
    # moment a job leaves its end marker (a bash loop on the login node looking at the
    # marker directories of the runs with live jobs twice a second; no scheduler query).
    watch_end_markers: bool = True
    # Submit a run's ready tasks of one shape as one array job (false: one job each, for
    # sites that forbid arrays).
    arrays: bool = True
