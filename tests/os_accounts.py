"""Real OS accounts for the tests of local backends with ``run_as`` (the suite runs as root).

Accounts are made once per machine (``useradd``, idempotent names) and kept; those that
tasks may run as are put in the root helper's allowed group (backends/local/scripthut-runas).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess

import pytest

TASKS_GROUP = "scripthut-tasks"  # the helper's default allowed group


def need_root() -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"):
        pytest.skip("run_as tests need root, setpriv and unshare")


def ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", "-f", name], check=True, capture_output=True)


def ensure_account(name: str, *, allowed: bool = True, home: str | None = None) -> pwd.struct_passwd:
    """The account ``name`` with a home, created if missing; in the helper's allowed group if ``allowed``."""
    need_root()
    try:
        pwd.getpwnam(name)
    except KeyError:
        home = home or f"/var/lib/{name}"
        command = ["useradd", "--system", "--create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", name]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode not in (0, 9):  # 9: made meanwhile by another test worker
            raise RuntimeError(proc.stderr) from None
    ensure_group(TASKS_GROUP)
    members = grp.getgrnam(TASKS_GROUP).gr_mem
    if allowed and name not in members:
        subprocess.run(["gpasswd", "-a", name, TASKS_GROUP], check=True, capture_output=True)
    if not allowed and name in members:
        subprocess.run(["gpasswd", "-d", name, TASKS_GROUP], check=True, capture_output=True)
    return pwd.getpwnam(name)
