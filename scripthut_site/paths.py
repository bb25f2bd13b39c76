"""Where ScriptHut keeps its files, decided before Django settings load.

The data dir comes from ``SCRIPTHUT_DATA_DIR``, else ``settings.data_dir`` in the
config file, else ``~/.cache/scripthut``. The config file is only peeked at here;
it is validated properly by the importer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

DEFAULT_DATA_DIR = "~/.cache/scripthut"


def config_path() -> Path:
    return Path(os.environ.get("SCRIPTHUT_CONFIG", "scripthut.yaml")).expanduser()


def data_dir() -> Path:
    configured = os.environ.get("SCRIPTHUT_DATA_DIR")
    if not configured:
        configured = config_setting("data_dir") or DEFAULT_DATA_DIR
    path = Path(configured).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        return key_file.read_text().strip()
    key = secrets.token_urlsafe(50)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
