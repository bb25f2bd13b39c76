"""Running a local backend's commands as another OS account.

The portal's user can read the portal's secret key, database and sessions; a task that
runs as it can too. With ``run_as`` every task, its runner and the backend's shell
commands run as an unprivileged account instead — one shared account, or each portal
user's own (``run_as: per_user``) — with a clean environment (the portal's may hold
``SECRET_KEY``, ``DATABASE_URL`` or cloud credentials).

The switch is one small root helper, ``scripthut-runas`` (beside this module), that does
nothing else: it refuses root, the portal's own account and any account not in its
allowed group, and can put the command in a network namespace of its own (``network:
none``). A portal running as root runs it directly; an unprivileged portal (the container
image's ``scripthut`` account) through ``sudo -n``, allowed by one sudoers rule for the
installed helper only (README "The local backend and security").
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

INSTALLED_HELPER = "/usr/local/libexec/scripthut-runas"
PACKAGED_HELPER = str(Path(__file__).with_name("scripthut-runas"))


def helper() -> str:
    """The helper's path: ``SCRIPTHUT_RUNAS_HELPER``, else the installed copy, else (for a
    portal running as root) the one beside this module."""
    configured = getattr(settings, "SCRIPTHUT_RUNAS_HELPER", "")
    if configured:
        return str(configured)
    return INSTALLED_HELPER if os.path.exists(INSTALLED_HELPER) else PACKAGED_HELPER


@dataclass(frozen=True)
class RunAs:
    user: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """KeyError if there is no such user."""
        entry = pwd.getpwnam(user)
        return cls(user=user, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)

    @property
    def with_sudo(self) -> bool:
        """Only root can switch users by itself; anyone else asks sudo to run the helper."""
        return os.geteuid() != 0

    def command(self, argv: list[str], network: str = "host") -> list[str]:
        """``argv`` as this user, in a clean environment, with the host's network or
        (``none``) only a loopback of its own."""
        # sudo runs the installed helper itself (its rule names that file); root needs no
        # executable bit on the packaged copy.
        switch = ["sudo", "-n", helper()] if self.with_sudo else ["/bin/bash", helper()]
        return [*switch, self.user, network, *argv]
