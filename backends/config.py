"""Per-type backend settings, as written in the ``backends`` list of scripthut.yaml.

Each backend package has its settings model (``backends/<kind>/settings.py``, on
:class:`backends.schema.BackendSettings`); this module gathers them from the registry
and holds the helpers that validate them and report problems.

A Backend row keeps ``name``, ``type``, ``max_concurrent`` and ``poll_interval`` in
columns; everything else (ssh block, account, aws block, ...) is the validated model
dumped into ``Backend.settings``. Unknown keys are accepted (old config files must keep
loading) and reported as warnings by :func:`unknown_keys`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import BaseModel, ValidationError, WrapValidator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from backends.registry import BACKENDS, settings_class, unknown_kind
from backends.schema import BackendSettings

# Backend columns, not settings.
ROW_FIELDS = frozenset({"name", "type", "max_concurrent", "poll_interval", "allowed_groups"})


def kind_problem(kind: object) -> str | None:
    """Why ``kind`` is not a backend type one can use, or None if it is registered."""
    if isinstance(kind, str) and kind in BACKENDS:
        return None
    return unknown_kind(str(kind))


def _by_type(value: Any, _handler: Any) -> BackendSettings:
    """One item of the ``backends`` list, validated by the settings model its ``type``
    names, looked up in the registry now (not when this module was imported)."""
    if not isinstance(value, dict):
        raise PydanticCustomError("model_type", "must be a mapping of keys (name, type, ...)")
    if "type" not in value:
        raise _type_error(value, "missing", "field required")
    problem = kind_problem(value["type"])
    if problem:
        raise _type_error(value, "invalid_backend_type", problem)
    # Its errors keep their key paths, below this item's.
    return settings_class(value["type"]).model_validate(value)


def _type_error(value: Any, code: str, message: str) -> ValidationError:
    error = InitErrorDetails(type=PydanticCustomError(code, message), loc=("type",), input=value)
    return ValidationError.from_exception_data("backend", [error])


if TYPE_CHECKING:
    # Statically, one item of the ``backends`` list is some backend's settings.
    BackendConfig: TypeAlias = BackendSettings
else:
    BackendConfig = Annotated[Any, WrapValidator(_by_type)]


def backend_settings(backend: BaseModel) -> dict[str, Any]:
    """What goes in ``Backend.settings``: the validated model minus the row columns."""
    return backend.model_dump(mode="json", exclude=set(ROW_FIELDS))


def validate_backend_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the settings of a Backend row of type ``kind``.

    Defaults are filled in. Unlike the config file, unknown keys are errors here: this
    is what the admin form runs, and a typo there should not vanish silently.
    Raises ValueError with one ``key.path: message`` line per problem.
    """
    problem = kind_problem(kind)
    if problem:
        raise ValueError(f"type: {problem}")
    model = settings_class(kind)
    if not isinstance(settings, dict):
        raise ValueError("settings: must be an object")
    data = {key: value for key, value in settings.items() if key not in ROW_FIELDS}
    data.update(name=kind, type=kind)  # required by the model, kept in columns
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise ValueError("\n".join(error_lines(exc))) from None
    unknown = unknown_keys(parsed)
    if unknown:
        raise ValueError("\n".join(f"{path}: unknown key{hint}" for path, hint in unknown))
    return backend_settings(parsed)


# Error and warning reporting, shared with scripthut_site.config.


def key_path(loc: Sequence[int | str]) -> str:
    """``("backends", 1, "ssh", "host")`` -> ``backends[1].ssh.host``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def error_message(error: ErrorDetails) -> str:
    """Pydantic's message, lower-cased and without the "Value error, " of our validators."""
    message = error["msg"]
    if error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
    return message[:1].lower() + message[1:]


def error_line(loc: Sequence[int | str], message: str) -> str:
    path = key_path(loc)
    return f"{path}: {message}" if path else message


def error_lines(exc: ValidationError) -> list[str]:
    return [error_line(error["loc"], error_message(error)) for error in exc.errors()]


def unknown_keys(value: object, path: str = "") -> list[tuple[str, str]]:
    """The keys a validated config model tree did not know: ``(key.path, hint)``, the hint
    naming the closest known key where one is close (`` (did you mean 'workflows'?)``)."""

    def join(key: str) -> str:
        return f"{path}.{key}" if path else key

    found: list[tuple[str, str]] = []
    if isinstance(value, BaseModel):
        known = list(type(value).model_fields)
        for key in value.model_extra or {}:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.7)
            found.append((join(str(key)), f" (did you mean {close[0]!r}?)" if close else ""))
        for name in known:
            found += unknown_keys(getattr(value, name), join(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += unknown_keys(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_keys(item, join(str(key)))
    return found
