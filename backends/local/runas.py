"""Running a local backend's commands as its ``run_as`` user.

The portal's user can read the portal's secret key, database and sessions; a task that
runs as it can too. With ``run_as`` every task, its runner and the backend's shell
commands run as that unprivileged user, with a clean environment (the portal's may hold
``SECRET_KEY``, ``DATABASE_URL`` or cloud credentials): through ``setpriv`` when the
portal runs as root, else through ``sudo -n -u <user>``, which the admin allows with a
sudoers line such as ``scripthut ALL=(scripthut-runner) NOPASSWD: ALL``.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

# What a login would give the user; nothing of the portal's own environment.
PATH = "/usr/local/bin:/usr/bin:/bin"


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
        """Only root can switch users by itself; anyone else asks sudo."""
        return os.geteuid() != 0

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as this user, in a clean environment."""
        if self.with_sudo:
            switch = ["sudo", "-n", "-u", self.user, "--"]
        else:
            switch = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        env = [f"HOME={self.home}", f"USER={self.user}", f"LOGNAME={self.user}", f"PATH={PATH}"]
        return [*switch, "env", "-i", *env, "SHELL=/bin/bash", "LANG=C.UTF-8", *argv]
