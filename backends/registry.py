"""One adapter per backend per process, so connections persist between ticks."""

from __future__ import annotations

import json
import threading

from django.conf import settings

from backends.base import BackendAdapter, BackendUnavailable
from backends.models import Backend

_lock = threading.Lock()
_adapters: dict[str, tuple[str, BackendAdapter]] = {}


def adapter_class(kind: str) -> type[BackendAdapter]:
    from backends.local import LocalBackend
    from backends.pbs import PBSBackend
    from backends.slurm import SlurmBackend

    classes: dict[str, type[BackendAdapter]] = {
        Backend.Kind.LOCAL: LocalBackend,
        Backend.Kind.SLURM: SlurmBackend,
        Backend.Kind.PBS: PBSBackend,
    }
    try:
        return classes[kind]
    except KeyError:
        raise BackendUnavailable(f"backend type {kind!r} is not supported by this version of ScriptHut") from None


def get_adapter(backend: Backend) -> BackendAdapter:
    """The cached adapter for a backend; rebuilt when its type or settings change."""
    fingerprint = json.dumps([backend.kind, backend.settings], sort_keys=True)
    with _lock:
        cached = _adapters.get(backend.name)
        if cached and cached[0] == fingerprint:
            cached[1].backend = backend
            return cached[1]
        if cached:
            cached[1].close()
        adapter = adapter_class(backend.kind)(backend, settings.DATA_DIR)
        _adapters[backend.name] = (fingerprint, adapter)
        return adapter


def close_all() -> None:
    with _lock:
        for _, adapter in _adapters.values():
            adapter.close()
        _adapters.clear()
