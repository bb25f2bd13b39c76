"""Whose OS account a portal user's tasks run as on a ``local`` backend with ``run_as: per_user``.

``os_users`` names accounts explicitly (``{alice: asmith}``) and wins; everyone else gets
``os_user`` filled in with their portal username (default ``{username}``: the LDAP uid
when LDAP is on). A user whose account is not named, or does not exist here, is refused
with the reason: their runs are refused at creation, their pending tasks wait saying why.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from typing import Any

# What the root helper accepts as an account name (backends/local/scripthut-runas).
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._@][A-Za-z0-9._@-]*")


def os_account(settings: Mapping[str, Any], username: str) -> str:
    """The account ``username``'s tasks run as on a per_user backend (``settings``: its stored settings)."""
    explicit = (settings.get("os_users") or {}).get(username)
    if explicit:
        return str(explicit)
    return str(settings.get("os_user") or "{username}").format(username=username)


def account_problem(settings: Mapping[str, Any], username: str) -> str:
    """Why ``username``'s tasks cannot run as their account on this host, or ""."""
    account = os_account(settings, username)
    if not ACCOUNT_NAME.fullmatch(account):
        return f"{account!r}, the OS account of {username}, is not a valid account name"
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        return f"{username}'s OS account {account!r} does not exist on this host"
    if entry.pw_uid == 0:
        return f"{username}'s OS account {account!r} is root: tasks must run as an unprivileged account"
    if entry.pw_uid == os.geteuid():
        return f"{username}'s OS account {account!r} is the portal's own account"
    return ""
