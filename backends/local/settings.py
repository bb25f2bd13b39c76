"""Settings of a ``local`` backend in the ``backends`` list of scripthut.yaml."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from string import Formatter
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from backends.base import safe_filename
from backends.local.accounts import ACCOUNT_NAME
from backends.schema import BackendSettings


class LocalSettings(BackendSettings):
    """Runs tasks as processes on the portal host (ours; not in the original product)."""

    type: Literal["local"]
    max_concurrent: int = Field(default=4, ge=1)
    poll_interval: int = Field(default=2, ge=1)
    log_dir: str | None = None
    # Whose OS account tasks run as: PER_USER (each portal user's own, see os_user and
    # os_users), one unprivileged account shared by everyone on the backend, or unset: the
    # portal's own user (staff only).
    run_as: str | None = None
    # With run_as: per_user, the account of a portal user: a template of {username}
    # (the LDAP uid when LDAP is on), unless os_users names theirs explicitly.
    os_user: str = "{username}"
    os_users: dict[str, str] = Field(default_factory=dict)
    # none: the tasks see only their own loopback (a network namespace), not the portal's
    # database, Redis or web server; host: the host's network. Default: none with run_as.
    network: Literal["none", "host"] | None = None
    # Where job files, scripts and default logs go (see backends.local.adapter).
    work_dir: str | None = None
    # Directories, besides the run's own, that a task's output/error/generated files may be in.
    allowed_paths: list[str] = Field(default_factory=list)

    @field_validator("run_as")
    @classmethod
    def _unprivileged_user(cls, user: str | None) -> str | None:
        if user is None or user == PER_USER:
            return user
        return check_run_as(user)

    @field_validator("os_user")
    @classmethod
    def _template(cls, template: str) -> str:
        fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
        if fields - {"username"}:
            raise ValueError(f"may only use {{username}}, not {', '.join(sorted(fields - {'username'}))}")
        return template

    @field_validator("os_users")
    @classmethod
    def _account_names(cls, accounts: dict[str, str]) -> dict[str, str]:
        bad = [f"{user}: {account!r}" for user, account in accounts.items() if not ACCOUNT_NAME.fullmatch(account)]
        if bad:
            raise ValueError(f"not valid account names: {', '.join(bad)}")
        return accounts

    @model_validator(mode="after")
    def _network_needs_run_as(self) -> LocalSettings:
        if self.network == "none" and self.run_as is None:
            raise ValueError(
                "network: none needs run_as (tasks that run as the portal's own user can read its secrets anyway)"
            )
        return self

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


PER_USER = "per_user"  # run_as: each portal user's tasks run as their own OS account
SHARED_ACCOUNT_WARNING = (
    "every user of a local backend with one shared run_as account runs as that account: they can "
    "read and change each other's jobs, scripts and logs; run_as: per_user gives each their own account"
)


def network_of(settings: Mapping[str, Any]) -> str:
    """``none`` or ``host``: the network a ``local`` Backend's tasks see (``settings``:
    its stored settings). Unset: none when tasks run as another account than the portal's."""
    return str(settings.get("network") or ("none" if settings.get("run_as") else "host"))


def shared_account(settings: Mapping[str, Any]) -> str:
    """The one account every user's tasks of a ``local`` backend run as, or "" (per_user, or none)."""
    run_as = settings.get("run_as")
    return "" if not run_as or run_as == PER_USER else str(run_as)


def account_warning(item: Mapping[str, Any]) -> str:
    """A warning for a ``local`` backend of the config file that runs everyone as one account, or ""."""
    if item.get("type") != "local" or not shared_account(item):
        return ""
    return f"run_as: {item['run_as']!r}: {SHARED_ACCOUNT_WARNING}"


def work_root(settings: Mapping[str, Any], backend: str, data_dir: Path, account: str | None) -> Path:
    """The work root of a ``local`` backend's tasks that run as ``account`` (None: the portal's user)."""
    name = safe_filename(backend)
    if settings.get("run_as") == PER_USER:  # each account its own, made by that account
        if settings.get("work_dir"):
            return Path(settings["work_dir"]) / safe_filename(account or "")
        return Path(f"/var/tmp/scripthut-{name}-{safe_filename(account or '')}")  # noqa: S108
    # run_as must reach it (the data dir's parents may be private); squatting another
    # user's directory there is refused by the launcher's ownership check.
    default = f"/var/tmp/scripthut-{name}" if account else f"{data_dir}-work/{name}"  # noqa: S108
    return Path(settings.get("work_dir") or default)


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
