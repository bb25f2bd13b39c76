"""Every kind of backend, and one adapter per backend (and per cluster identity on a
``per_user`` backend) per process: connections persist between ticks.

Adding a backend is one package plus one line in :data:`BACKENDS`. The package has
``settings.py`` exposing ``Settings`` (its part of scripthut.yaml) and ``adapter.py``
exposing ``Adapter``. They are separate so that loading a config never imports a
scheduler's client libraries (paramiko, boto3).

Everything keyed by kind asks this module, when it is asked: the config file's
``type``, the ``Backend.kind`` column (no choices frozen in a migration), the admin's
type menu.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError

from backends.base import BackendAdapter, BackendError, BackendUnavailable, ShellAccess

if TYPE_CHECKING:
    from backends.base import Identity
    from backends.models import Backend
    from backends.schema import BackendSettings


@dataclass(frozen=True)
class BackendKind:
    package: str  # has settings.py (Settings) and, where supported, adapter.py (Adapter)
    label: str  # shown in the admin


# The order is the order of the admin's type menu, and of the types listed in errors.
BACKENDS: dict[str, BackendKind] = {
    "local": BackendKind("backends.local", "Local processes"),
    "slurm": BackendKind("backends.slurm", "Slurm (SSH)"),
    "pbs": BackendKind("backends.pbs", "PBS/Torque (SSH)"),
    "batch": BackendKind("backends.batch", "AWS Batch"),
    "ec2": BackendKind("backends.ec2", "AWS EC2"),
    "ecs": BackendKind("backends.ecs", "AWS ECS (Fargate or EC2)"),
}


def kind_choices() -> list[tuple[str, str]]:
    """(kind, label) of every registered kind, for a form's menu."""
    return [(kind, entry.label) for kind, entry in BACKENDS.items()]


def unknown_kind(kind: str) -> str:
    """The message for a type that is not registered, naming the ones that are."""
    return f"unknown backend type {kind!r} (expected one of: {', '.join(BACKENDS)})"


def validate_kind(kind: str) -> None:
    """The ``Backend.kind`` field's validator: a registered kind, or ValidationError."""
    if kind not in BACKENDS:
        raise ValidationError(unknown_kind(kind), code="unknown_kind")


def settings_class(kind: str) -> type[BackendSettings]:
    """The settings model of a registered kind (KeyError for others)."""
    module = importlib.import_module(f"{BACKENDS[kind].package}.settings")
    model: type[BackendSettings] = module.Settings
    return model


def adapter_class(kind: str) -> type[BackendAdapter]:
    entry = BACKENDS.get(kind)
    # A row whose kind was unregistered since (or a package without adapter.py).
    if entry is None or importlib.util.find_spec(f"{entry.package}.adapter") is None:
        raise BackendUnavailable(f"backend type {kind!r} is not supported by this version of ScriptHut")
    adapter: type[BackendAdapter] = importlib.import_module(f"{entry.package}.adapter").Adapter
    return adapter


def has_unlimited_time(kind: str) -> bool:
    """Whether backends of this kind run jobs with no time limit (``time_limit: UNLIMITED``)."""
    try:
        return adapter_class(kind).unlimited_time
    except BackendUnavailable:
        return False


_lock = threading.Lock()
# (backend name, identity's user id or "shared") -> (what it was built from, the adapter)
_adapters: dict[tuple[str, int | str], tuple[str, BackendAdapter]] = {}


def get_adapter(backend: Backend, identity: Identity | None = None) -> BackendAdapter:
    """The cached adapter for a backend, acting as ``identity`` if given (else the account
    of the config); rebuilt when the backend's type or settings, or the identity, change."""
    key = (backend.name, identity.user_id if identity else "shared")
    updated = identity.updated_at.isoformat() if identity and identity.updated_at else None
    version = [identity.pk, identity.username, updated] if identity else None
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
