"""The system checks refuse what the portal cannot run on."""

from __future__ import annotations

import sqlite3

from runs.checks import sqlite_problems


def test_an_old_sqlite_is_refused_with_what_is_needed() -> None:
    (error,) = sqlite_problems((3, 34, 1), "3.34.1")
    assert error.id == "scripthut.E001" and "SQLite 3.34.1 is too old" in error.msg and "3.35" in error.msg


def test_this_machines_sqlite_is_new_enough() -> None:
    assert sqlite_problems(sqlite3.sqlite_version_info, sqlite3.sqlite_version) == []
