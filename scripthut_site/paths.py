"""Where ScriptHut keeps its files, decided before Django settings load.

The data dir comes from ``SCRIPTHUT_DATA_DIR``, else ``settings.data_dir`` in the
config file, else ``~/.cache/scripthut``. The config file is only peeked at here;
it is validated properly by the importer.

What the portal keeps there is its user's alone: the data dir is kept mode 700, and the
secret key and the SQLite database (hence its -wal and -shm, which SQLite creates with the
database's mode) 600. No process-wide umask: jobs of the local backend inherit it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import yaml

DEFAULT_DATA_DIR = "~/.cache/scripthut"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def config_path() -> Path:
    return Path(os.environ.get("SCRIPTHUT_CONFIG", "scripthut.yaml")).expanduser()


def data_dir() -> Path:
    configured = os.environ.get("SCRIPTHUT_DATA_DIR")
    if not configured:
        configured = config_setting("data_dir") or DEFAULT_DATA_DIR
    return private_dir(Path(configured).expanduser())


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) if missing; mode 700 whenever the portal's user owns it.

    The data dir holds the secret key, database and sessions: no other user (a local
    backend's run_as) may look in.
    """
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(PRIVATE_DIR)  # also when it existed, or the umask narrowed mkdir's mode
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 600 if missing, else narrow it to 600 if others may read it."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE))
    if stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_FILE:
        path.chmod(PRIVATE_FILE)
    return path


def private_database(path: Path) -> Path:
    """The SQLite database, made mode 600 before Django opens it.

    SQLite gives its -wal and -shm files the database's mode, so they are private too;
    left-over ones from before are narrowed here.
    """
    if not path.parent.is_dir():
        return path  # SQLite says so when Django connects
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            private_file(companion)
    return private_file(path)


def config_setting(key: str) -> str | None:
    """``settings.<key>`` of the config file, if it has one (unvalidated)."""
    path = config_path()
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # the importer reports the problem with its key path
    if isinstance(raw, dict) and isinstance(raw.get("settings"), dict):
        value = raw["settings"].get(key)
        return str(value) if value else None
    return None


def secret_key(directory: Path) -> str:
    """Return the portal's secret key, generated once and kept (mode 600) in the data dir."""
    key_file = directory / "secret_key"
    if key_file.exists():
        private_file(key_file)
        return key_file.read_text().strip()
    key = secrets.token_urlsafe(50)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
