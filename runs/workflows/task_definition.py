"""One task as written in workflow JSON, and the limits every field is held to.

Each string fits its ``runs.Task`` column (PostgreSQL refuses a longer one), no value
carries a NUL byte (PostgreSQL refuses those in text and JSON), and the short fields
that reach scheduler directives, job names and pages are single lines without the
Unicode formatting characters that make text read differently than it runs. The same
limits appear in the OpenAPI schema (``maxLength``, ``maximum``, ``pattern``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from backends.units import UNLIMITED, is_unlimited, parse_duration, parse_memory_mb

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_CPUS = 65_535  # Slurm's --cpus-per-task is a 16-bit number
MAX_RETRIES = 100

# C0 and C1 controls, DEL, the line and paragraph separators, and the bidirectional
# marks, embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-E, U+2066-9).
_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
# Lone surrogates cannot be stored as UTF-8 at all; they stay out of the schema's
# pattern, which generators read as a regex over real characters.
_FORBIDDEN_CHARS = re.compile(f"[{_FORBIDDEN}\\ud800-\\udfff]")
SINGLE_LINE_PATTERN = f"^[^{_FORBIDDEN}]*$"
NOT_BLANK_LINE_PATTERN = f"^[^{_FORBIDDEN}]*[^\\s{_FORBIDDEN}][^{_FORBIDDEN}]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"
MEMORY_PATTERN = r"^\s*\d+(\.\d+)?\s*[KMGTPkmgtp]?([iI]?[bB])?\s*$"
TIME_LIMIT_PATTERN = r"^\s*((\d+-)?\d+(:\d+){0,2}|UNLIMITED|unlimited|infinite|INFINITE)\s*$"


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _single_line(value: str) -> str:
    # These end up on scheduler directive lines, where a newline would start a new directive.
    if _FORBIDDEN_CHARS.search(value):
        raise ValueError("must not contain newlines, control or bidirectional formatting characters")
    return value


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL bytes or unpaired surrogates")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _time_limit(value: str) -> str:
    if is_unlimited(value):
        return UNLIMITED  # refused on a backend whose scheduler has no such limit (runs.actions)
    parse_duration(value)  # raises ValueError with the reason
    return value


def _whole_number(value: Any) -> Any:
    """A count as the original accepted it: ``4``, ``"4"`` and ``4.0`` are 4; ``true``,
    ``2.5`` and ``"four"`` are refused with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, not {json.dumps(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, not {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 10):
            raise ValueError(f"must be a whole number, not {value[:40]!r}")
        return int(text)
    return value


def _number_as_text(value: Any) -> Any:
    """A memory or time limit written as a bare number (``4096``: MB; ``90``: minutes, as
    the schedulers read them); booleans are refused by the string type."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _memory(value: str) -> str:
    parse_memory_mb(value)
    return value


def _size(max_length: int | None, min_length: int = 0, pattern: str = SINGLE_LINE_PATTERN) -> Any:
    return Field(min_length=min_length, max_length=max_length, json_schema_extra={"pattern": pattern})


SINGLE_LINE = AfterValidator(_single_line)
NOT_BLANK = AfterValidator(_not_blank)
# Values that are not strings are stored as their JSON text (numbers as written).
_ENV_SCHEMA = {
    "type": "object",
    "propertyNames": {"pattern": ENV_NAME.pattern},
    "additionalProperties": {"pattern": NO_NUL_PATTERN, "description": "A string; other values are stored as JSON."},
}


class TaskDefinition(BaseModel):
    """One task as written in workflow JSON (fields and defaults as in the original)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    id: Annotated[str, _size(255, 1), SINGLE_LINE]
    name: Annotated[str, _size(255, 1), SINGLE_LINE]
    command: Annotated[str, _size(None, 1, NO_NUL_PATTERN), AfterValidator(_storable)]
    deps: list[Annotated[str, _size(1000, 1), SINGLE_LINE]] = Field(default_factory=list)
    working_dir: Annotated[str, _size(1000, 1, NOT_BLANK_LINE_PATTERN), SINGLE_LINE, NOT_BLANK] = "~"
    partition: Annotated[str, _size(100, 1, NOT_BLANK_LINE_PATTERN), SINGLE_LINE, NOT_BLANK] = "normal"
    cpus: Annotated[int, BeforeValidator(_whole_number)] = Field(default=1, ge=1, le=MAX_CPUS, strict=True)
    memory: Annotated[str, _size(32, 1, MEMORY_PATTERN), AfterValidator(_memory)] = "4G"
    time_limit: Annotated[str, _size(32, 1, TIME_LIMIT_PATTERN), AfterValidator(_time_limit)] = "1:00:00"
    output_file: Annotated[str, _size(1000), SINGLE_LINE] = ""
    error_file: Annotated[str, _size(1000), SINGLE_LINE] = ""
    environment: Annotated[str, _size(100), SINGLE_LINE] = ""
    env_vars: Annotated[dict[str, str], WithJsonSchema(_ENV_SCHEMA)] = Field(default_factory=dict)
    generates_source: Annotated[str, _size(1000), SINGLE_LINE] = ""
    gres: Annotated[str, _size(100), SINGLE_LINE] = ""
    image: Annotated[str, _size(500), SINGLE_LINE] = ""
    retries: Annotated[int, BeforeValidator(_whole_number)] = Field(default=0, ge=0, le=MAX_RETRIES, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        # The original reads `null` for an optional field as the field left out.
        if isinstance(data, Mapping):
            optional = {name for name, f in cls.model_fields.items() if not f.is_required()}
            return {k: v for k, v in data.items() if not (v is None and k in optional)}
        return data

    @field_validator("memory", "time_limit", mode="before")
    @classmethod
    def _bare_numbers(cls, value: Any) -> Any:
        return _number_as_text(value)

    @field_validator("env_vars", mode="before")
    @classmethod
    def _stringify_values(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: v if isinstance(v, str) else json.dumps(v) if not isinstance(v, int | float) else str(v)
                for k, v in value.items()
            }
        return value

    @field_validator("env_vars")
    @classmethod
    def _valid_env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not a valid environment variable name: {bad[0]!r}")
        for name, text in value.items():
            if _UNSTORABLE.search(text):
                raise ValueError(f"{name}: must not contain NUL bytes or unpaired surrogates")
        return value
