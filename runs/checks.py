"""System checks (``manage.py check``, ``migrate`` and so every ``scripthut serve``): what the
portal needs of what it runs on."""

from __future__ import annotations

import sqlite3
from typing import Any

from django.core.checks import Error, register
from django.db import connections

# The engine's conditional moves use UPDATE ... FROM (3.33) and RETURNING (3.35): runs/engine/sql.py.
SQLITE_NEEDED = (3, 35)


@register()
def sqlite_is_new_enough(**kwargs: Any) -> list[Error]:
    if all(connections[alias].vendor != "sqlite" for alias in connections):
        return []
    return sqlite_problems(sqlite3.sqlite_version_info, sqlite3.sqlite_version)


def sqlite_problems(version_info: tuple[int, ...], version: str) -> list[Error]:
    if version_info >= SQLITE_NEEDED:
        return []
    needed = ".".join(map(str, SQLITE_NEEDED))
    return [
        Error(
            f"SQLite {version} is too old: ScriptHut needs {needed} or newer",
            hint="use a newer SQLite (Python built against it) or PostgreSQL (DATABASE_URL)",
            id="scripthut.E001",
        )
    ]
