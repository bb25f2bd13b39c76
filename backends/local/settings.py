"""Settings of a ``local`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from backends.schema import BackendSettings


class LocalSettings(BackendSettings):
    """Runs tasks as processes on the portal host (ours; not in the original product)."""

    type: Literal["local"]
    max_concurrent: int = Field(default=4, ge=1)
    poll_interval: int = Field(default=2, ge=1)
    log_dir: str | None = None
    # An unprivileged OS user every task runs as; unset, tasks run as the portal's own user.
    run_as: str | None = None
    # Where job files, scripts and default logs go (see backends.local.adapter).
    work_dir: str | None = None
    # Directories, besides the run's own, that a task's output/error/generated files may be in.
    allowed_paths: list[str] = Field(default_factory=list)

    @field_validator("run_as")
    @classmethod
    def _unprivileged_user(cls, user: str | None) -> str | None:
        if user is None:
            return None
        return check_run_as(user)

    @field_validator("work_dir")
    @classmethod
    def _absolute_dir(cls, path: str | None) -> str | None:
        if path is not None and not os.path.isabs(path):
            raise ValueError(f"must be an absolute path, not {path!r}")
        return path

    @field_validator("allowed_paths")
    @classmethod
    def _absolute_dirs(cls, paths: list[str]) -> list[str]:
        relative = [path for path in paths if not os.path.isabs(path)]
        if relative:
            raise ValueError(f"must be absolute paths, not {', '.join(map(repr, relative))}")
        return paths

    @property
    def confined(self) -> bool:
        """True when tasks run as ``run_as``, not as the portal's own user."""
        return self.run_as is not None


def check_run_as(user: str) -> str:
    """``user`` if tasks may run as it: it exists, is not root and is not the portal's user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no such user {user!r} on this host") from None
    if entry.pw_uid == 0:
        raise ValueError(f"{user!r} is root (uid 0): tasks must run as an unprivileged user")
    if entry.pw_uid == os.geteuid():
        raise ValueError(f"{user!r} is the portal's own user, which can read its secret key and database")
    return user


def runs_as_portal_user(settings: Mapping[str, Any]) -> bool:
    """For a ``local`` Backend's ``settings``: True if its tasks run as the portal's user,
    so that only staff may use it (they could read the portal's secrets)."""
    return not settings.get("run_as")


def sharing_problem(item: Mapping[str, Any]) -> str:
    """Why a ``local`` backend of the config file may not name ``allowed_groups``, or ""."""
    if item.get("type") != "local" or not item.get("allowed_groups") or item.get("run_as"):
        return ""
    return (
        "a local backend shared with groups must name run_as: its tasks would otherwise run as the "
        "portal's own user and could read the portal's secret key, database and sessions"
    )


Settings = LocalSettings
