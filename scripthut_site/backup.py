"""``scripthut backup FILE`` / ``scripthut restore FILE`` for the embedded SQLite database.

Both use SQLite's online backup API: a backup is consistent while the portal runs and
writes; a restore replaces every page of the database at once (stop the portal first, it
would otherwise go on with what it had read). PostgreSQL has its own tools: the commands
say which instead of doing half a job.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

POSTGRES_ADVICE = (
    "the database is PostgreSQL: back it up with `pg_dump --format=custom DBNAME > FILE` and restore it "
    "with `pg_restore --clean --dbname DBNAME FILE` (see the README's Backups)"
)


def _database() -> Path | None:
    """The SQLite file of the portal, or None when the database is not SQLite."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return None
    return Path(database["NAME"])


def backup(target: Path) -> int:
    database = _database()
    if database is None:
        print(POSTGRES_ADVICE, file=sys.stderr)
        return 2
    if target.exists():
        print(f"{target} exists: name a new file (a backup never overwrites one)", file=sys.stderr)
        return 2
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the data is private
    os.close(descriptor)
    with (
        closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    print(f"backed up {database} to {target} ({target.stat().st_size:,} bytes)")
    return 0


def restore(origin: Path) -> int:
    database = _database()
    if database is None:
        print(POSTGRES_ADVICE, file=sys.stderr)
        return 2
    problem = _not_a_backup(origin)
    if problem:
        print(f"{origin}: {problem}; nothing was changed", file=sys.stderr)
        return 2
    with (
        closing(sqlite3.connect(f"file:{origin}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(database)) as live,
    ):
        source.backup(live)
    print(f"restored {database} from {origin}; then run `scripthut migrate` if it was made by an older release")
    return 0


def _not_a_backup(origin: Path) -> str:
    """Why ``origin`` is not a ScriptHut SQLite database ("" if it is one)."""
    if not origin.is_file():
        return "no such file"
    try:
        with closing(sqlite3.connect(f"file:{origin}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return "the database is damaged (PRAGMA quick_check)"
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return f"not an SQLite database ({exc})"
    if not {"django_migrations", "runs_run"} <= tables:
        return "not a ScriptHut database (no runs_run table)"
    return ""
