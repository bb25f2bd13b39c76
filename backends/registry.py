"""Every kind of backend, and one adapter per backend (and per cluster identity on a
``per_user`` backend) per process: connections persist between ticks.

Adding a backend is one package plus one line in :data:`BACKENDS`. The package has
``settings.py`` exposing ``Settings`` (its part of scripthut.yaml) and, once it can run
jobs, ``adapter.py`` exposing ``Adapter``. They are separate so that loading a config
never imports a scheduler's client libraries (paramiko, boto3).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from backends.base import BackendAdapter, BackendError, BackendUnavailable, ShellAccess

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity
    from backends.schema import BackendSettings


@dataclass(frozen=True)
class BackendKind:
    package: str  # has settings.py (Settings) and, where supported, adapter.py (Adapter)
    label: str  # shown in the admin


# The order is the order of the type choices, and of the types listed in config errors.
BACKENDS: dict[str, BackendKind] = {
    "local": BackendKind("backends.local", "Local processes"),
    "slurm": BackendKind("backends.slurm", "Slurm (SSH)"),
    "pbs": BackendKind("backends.pbs", "PBS/Torque (SSH)"),
    "batch": BackendKind("backends.batch", "AWS Batch"),
    "ec2": BackendKind("backends.ec2", "AWS EC2"),
}


def settings_class(kind: str) -> type[BackendSettings]:
    """The settings model of a registered kind (KeyError for others)."""
    module = importlib.import_module(f"{BACKENDS[kind].package}.settings")
    model: type[BackendSettings] = module.Settings
    return model


def adapter_class(kind: str) -> type[BackendAdapter]:
    entry = BACKENDS.get(kind)
    # A kind whose adapter is still to come (batch, ec2) has no adapter module yet.
    if entry is None or importlib.util.find_spec(f"{entry.package}.adapter") is None:
        raise BackendUnavailable(f"backend type {kind!r} is not supported by this version of ScriptHut")
    adapter: type[BackendAdapter] = importlib.import_module(f"{entry.package}.adapter").Adapter
    return adapter


_lock = threading.Lock()
# (backend name, identity's user id or "shared") -> (what it was built from, the adapter)
_adapters: dict[tuple[str, int | str], tuple[str, BackendAdapter]] = {}


def get_adapter(backend: Backend, identity: ClusterIdentity | None = None) -> BackendAdapter:
    """The cached adapter for a backend, acting as ``identity`` if given (else the account
    of the config); rebuilt when the backend's type or settings, or the identity, change."""
    key = (backend.name, identity.user_id if identity else "shared")
    version = [identity.pk, identity.username, identity.updated_at.isoformat()] if identity else None
    fingerprint = json.dumps([backend.kind, backend.settings, version], sort_keys=True)
    with _lock:
        cached = _adapters.get(key)
        if cached and cached[0] == fingerprint:
            cached[1].backend = backend
            return cached[1]
        if cached:
            cached[1].close()
        kind = adapter_class(backend.kind)
        adapter = kind(backend, settings.DATA_DIR) if identity is None else kind(backend, settings.DATA_DIR, identity)
        _adapters[key] = (fingerprint, adapter)
        return adapter


def close_all() -> None:
    with _lock:
        for _, adapter in _adapters.values():
            adapter.close()
        _adapters.clear()


def has_shell(kind: str) -> bool:
    """Whether backends of this kind have a shell and files to read (not AWS Batch):
    workflow commands, ``generates_source`` and checkouts on the backend need one."""
    try:
        adapter = adapter_class(kind)
    except BackendUnavailable:
        return True  # no adapter yet: nothing to refuse on its behalf
    return all(callable(getattr(adapter, name, None)) for name in ("run_command", "read_file"))


def shell_access(adapter: BackendAdapter) -> ShellAccess:
    """The adapter, if its backend has a shell; BackendError otherwise."""
    if not isinstance(adapter, ShellAccess):
        raise BackendError(f"backend {adapter.name!r} has no shell to run commands or read files on")
    return adapter
