"""Secrets at rest: Fernet encryption with a list of keys, so keys can be rotated.

The keys come from ``SCRIPTHUT_SECRET_KEYS`` (comma-separated Fernet keys, newest
first) or, when that is unset, from ``<data dir>/fernet.keys`` (one key a line, newest
first, mode 600), created with one key on first use. Either way they live outside the
database. Values are encrypted with the first key and decrypted with any of them;
``scripthut rotate-keys`` re-encrypts every stored secret with the first key, after
which older keys can be removed.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.core import exceptions
from django.core.signals import setting_changed
from django.db import models

KEY_FILE = "fernet.keys"


class SecretKeyError(RuntimeError):
    """The encryption keys are missing or cannot decrypt a stored secret."""


def key_file() -> Path:
    return Path(settings.DATA_DIR) / KEY_FILE


def load_keys() -> list[bytes]:
    configured = os.environ.get("SCRIPTHUT_SECRET_KEYS", "").strip()
    if configured:
        return [k.strip().encode() for k in configured.split(",") if k.strip()]
    path = key_file()
    if not path.exists():
        write_key_file([Fernet.generate_key()])
    return [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]


def write_key_file(keys: list[bytes]) -> None:
    """Replace the key file atomically, readable by the portal's user only."""
    path = key_file()
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(key.decode() + "\n" for key in keys))
    temporary.replace(path)
    forget_keys()


@cache
def _fernet() -> MultiFernet:
    keys = load_keys()
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        # Never echo the keys themselves.
        problem = f"SCRIPTHUT_SECRET_KEYS / {KEY_FILE}: not a list of Fernet keys ({len(keys)} given)"
        raise SecretKeyError(problem) from exc


def forget_keys() -> None:
    _fernet.cache_clear()


def _on_setting_changed(**kwargs: Any) -> None:
    if kwargs.get("setting") == "DATA_DIR":
        forget_keys()


setting_changed.connect(_on_setting_changed)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from None


def rotate(token: str) -> str:
    """The same secret, encrypted with the newest key."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from None


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; reads give the clear text. Not searchable.

    Forms and APIs must treat it as write-only: never render its value back.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return decrypt(value) if value else value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value) if value else value


class EncryptedJSONField(EncryptedTextField):
    """A JSON value (a dict, a list, ...) stored as encrypted text; reads give the value.

    For values with a secret inside (a workflow's ``git`` block, whose repository URL may
    carry a token). Like :class:`EncryptedTextField`: not searchable, write-only in forms.
    """

    # What django-stubs reads as the field's Python type (a JSON value, not a str).
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        text = super().from_db_value(value, expression, connection)
        return json.loads(text) if text else None

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise exceptions.ValidationError("not valid JSON", code="invalid") from None
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return encrypt(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj), sort_keys=True)

    def formfield(self, form_class: Any = None, choices_form_class: Any = None, **kwargs: Any) -> Any:
        return super().formfield(
            form_class=form_class or forms.JSONField, choices_form_class=choices_form_class, **kwargs
        )


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with encrypted columns, and those columns."""
    from django.apps import apps

    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found
