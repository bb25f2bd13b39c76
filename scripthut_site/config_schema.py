"""The scripthut.yaml config file: its schema and loading (``scripthut_site.config``
imports it into the database).

The file format is the original product's and must keep loading unchanged. Every
section is optional; unknown keys are warnings, not errors. Problems are reported one
per line as ``key.path: message`` (``backends[1].ssh.host: field required``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from backends.config import BackendConfig, error_line, error_message, unknown_keys
from backends.local.settings import account_warning, sharing_problem
from backends.schema import ConfigModel
from runs.schedules.timing import cron_problem, timezone_problem


class ConfigError(Exception):
    """An invalid config file; ``errors`` holds one ``key.path: message`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# Schema.


class GitSourceConfig(ConfigModel):
    name: str = Field(min_length=1)
    type: Literal["git"]
    url: str = Field(min_length=1)
    branch: str = "main"
    deploy_key: str | None = None
    clone_dir: str = "~/scripthut-repos"
    postclone: str | None = None
    backend: str
    workflows_glob: str = ".hut/workflows/*.json"
    allowed_groups: list[str] = Field(default_factory=list)


class PathSourceConfig(ConfigModel):
    name: str = Field(min_length=1)
    type: Literal["path"]
    path: str = Field(min_length=1)
    backend: str
    workflows_glob: str = ".hut/workflows/*.json"
    allowed_groups: list[str] = Field(default_factory=list)


SourceConfig = Annotated[GitSourceConfig | PathSourceConfig, Field(discriminator="type")]


class EnvironmentConfig(ConfigModel):
    name: str = Field(min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)
    extra_init: str | None = None

    @field_validator("variables", mode="before")
    @classmethod
    def _bools_to_str(cls, value: Any) -> Any:
        # YAML reads `DEBUG: true` as a bool; the variable is exported as text anyway.
        # (Numbers are turned into strings by coerce_numbers_to_str.)
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else v for k, v in value.items()}
        return value


class WorkflowGitConfig(ConfigModel):
    repo: str = Field(min_length=1)
    branch: str = "main"
    deploy_key: str | None = None
    clone_dir: str = "~/scripthut-repos"


class WorkflowConfig(ConfigModel):
    name: str = Field(min_length=1)
    backend: str
    command: str = Field(min_length=1)
    max_concurrent: int | None = Field(default=None, ge=1)  # None: the backend's
    description: str | None = None
    git: WorkflowGitConfig | None = None
    allowed_groups: list[str] = Field(default_factory=list)


class FargatePricing(ConfigModel):
    # USD per vCPU-hour and per GB-hour of an ECS Fargate task's size (AWS's price page).
    vcpu_hour: Decimal = Field(gt=0)
    gb_hour: Decimal = Field(gt=0)


class ScheduleConfig(ConfigModel):
    """A run on a schedule (runs.schedules): a workflow, or a source's workflow file."""

    name: str = Field(min_length=1, max_length=100)
    workflow: str | None = Field(default=None, min_length=1)
    source: str | None = Field(default=None, min_length=1)
    file: str | None = Field(default=None, min_length=1)
    cron: str
    timezone: str = "UTC"
    overlap: Literal["skip", "queue", "allow"] = "skip"
    owner: str = Field(min_length=1)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        problem = timezone_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _target(self) -> ScheduleConfig:
        if bool(self.workflow) == bool(self.source) or bool(self.source) != bool(self.file):
            raise ValueError("give either workflow, or source and file")
        return self


class PricingConfig(ConfigModel):
    region: str = "us-east-1"
    price_type: Literal["ondemand", "spot_avg", "spot_min", "spot_max"] = "ondemand"
    partitions: dict[str, str]
    # Beyond the original: where instances.json comes from (a path, or a URL fetched daily;
    # default instances.vantage.sh), and the share of an instance a task is charged for:
    # "max" of its CPU and memory shares (a memory-bound task occupies the machine too),
    # or "cpu", the original's CPU-only share.
    source: str | None = Field(default=None, min_length=1)
    share: Literal["max", "cpu"] = "max"
    fargate: FargatePricing | None = None  # ECS tasks on Fargate are priced by their size


class SettingsConfig(ConfigModel):
    # Read at startup by scripthut_site.paths; validated here, not stored.
    data_dir: str = "~/.cache/scripthut"
    poll_interval: int = Field(default=60, ge=1)
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=8000, ge=1, le=65535)
    sources_cache_dir: str | None = None
    # The dashboard's user filter until a viewer picks one (empty: everyone).
    filter_user: str | None = Field(default=None, max_length=150)
    # Workflow documents with fields that are not ours are refused (else: warnings).
    strict_workflows: bool = False
    # Whom users without access are told to ask (default: the staff's email addresses).
    contact: str | None = Field(default=None, max_length=500)
    # Retention (runs.retention): finished runs' job files (0: kept), then their rows (null: kept).
    retention_days: int = Field(default=30, ge=0)
    keep_runs_days: int | None = Field(default=None, ge=1)


class ScriptHutConfig(ConfigModel):
    backends: list[BackendConfig] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    environments: list[EnvironmentConfig] = Field(default_factory=list)
    workflows: list[WorkflowConfig] = Field(default_factory=list)
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    pricing: PricingConfig | None = None
    settings: SettingsConfig = Field(default_factory=SettingsConfig)
    # Several files read as one (load_configs): their warnings, each naming its file.
    _file_warnings: list[str] | None = PrivateAttr(default=None)

    @field_validator("backends", "sources", "environments", "workflows", "schedules", "settings", mode="before")
    @classmethod
    def _empty_section(cls, value: Any, info: ValidationInfo) -> Any:
        # A section key with nothing under it (`workflows:`) reads as null.
        if value is None:
            return {} if info.field_name == "settings" else []
        return value

    def warnings(self) -> list[str]:
        if self._file_warnings is not None:  # several files: each warning says which
            return self._file_warnings
        found = [f"{path}: unknown key, ignored{hint}" for path, hint in unknown_keys(self)]
        for index, backend in enumerate(self.backends):
            warning = account_warning(backend.model_dump())
            if warning:
                found.append(f"backends[{index}].{warning}")
        return found


# Loading.

# Sections whose items are named, with the noun used in messages.
NAMED_SECTIONS = {
    "backends": "backend",
    "sources": "source",
    "environments": "environment",
    "workflows": "workflow",
    "schedules": "schedule",
}
# Lists of discriminated unions: pydantic puts the `type` tag in the error location.
# (Backends are not one: their type is looked up in the registry, backends.config.)
TAGGED_SECTIONS = {"sources"}


def load_config(source: str | os.PathLike[str]) -> ScriptHutConfig:
    """Parse and validate a config file (a path) or config text; raise ConfigError.

    A ``str`` is taken as a path when it is one line naming a file or ending in
    .yaml/.yml, otherwise as YAML text. Pass a Path to always mean a file.
    """
    return load_configs([source])


def load_configs(sources: Sequence[str | os.PathLike[str]]) -> ScriptHutConfig:
    """Several config files read as one unit, in order: their sections are joined, a name
    may be used in any of them (a workflow in the first file on a backend of the second),
    ``settings`` and ``pricing`` are the last file's that has them. Every problem of every
    file is raised together, each line naming its file when there are several."""
    errors: list[str] = []
    parts: list[tuple[str, dict[str, Any], ScriptHutConfig | None]] = []
    for source in sources:
        label = f"{source}: " if len(sources) > 1 else ""
        try:
            raw = _load_raw(source)
        except ConfigError as exc:
            errors += [label + line for line in exc.errors]
            continue
        config = None
        try:
            config = ScriptHutConfig.model_validate(raw)
        except ValidationError as exc:
            errors += [label + line for line in _error_lines(exc)]
        parts.append((label, raw, config))
    errors += _cross_check([(label, raw) for label, raw, _ in parts])
    configs = [config for _, _, config in parts if config is not None]
    if errors or len(configs) != len(sources):
        raise ConfigError(errors)
    if len(configs) == 1:
        return configs[0]
    return _joined([(label, raw, config) for (label, raw, _), config in zip(parts, configs, strict=True)])


def _load_raw(source: str | os.PathLike[str]) -> dict[str, Any]:
    raw = _parse_yaml(_read(source))
    if raw is None:
        return {}  # an empty file is a valid, empty config
    if not isinstance(raw, dict):
        raise ConfigError(["config: must be a mapping of sections (backends, sources, ...)"])
    return raw


def _joined(parts: list[tuple[str, dict[str, Any], ScriptHutConfig]]) -> ScriptHutConfig:
    joined = ScriptHutConfig()
    for section in NAMED_SECTIONS:
        setattr(joined, section, [item for _, _, config in parts for item in getattr(config, section)])
    for _, raw, config in parts:
        if raw.get("settings") is not None:
            joined.settings = config.settings
        if config.pricing is not None:
            joined.pricing = config.pricing
    joined._file_warnings = [label + warning for label, _, config in parts for warning in config.warnings()]
    return joined


def _read(source: str | os.PathLike[str]) -> str:
    if isinstance(source, str) and not _looks_like_path(source):
        return source
    path = Path(source).expanduser()
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read the file ({exc})"]) from None


def _looks_like_path(text: str) -> bool:
    if "\n" in text or not text.strip():
        return False
    return text.endswith((".yaml", ".yml")) or Path(text).expanduser().is_file()


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "config"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"config: invalid YAML: {exc}"]) from None


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        tagged = len(loc) >= 2 and loc[0] in TAGGED_SECTIONS and isinstance(loc[1], int)
        if tagged and error["type"] == "union_tag_not_found":
            lines.append(error_line([*loc, "type"], "field required"))
        elif tagged and error["type"] == "union_tag_invalid":
            lines.append(error_line([*loc, "type"], _bad_type(str(loc[0]), error.get("ctx", {}))))
        elif tagged and len(loc) > 2:
            # ("sources", 0, "git", "url"): drop the "git" tag.
            lines.append(error_line(loc[:2] + loc[3:], error_message(error)))
        else:
            lines.append(error_line(loc, error_message(error)))
    return lines


def _bad_type(section: str, ctx: dict[str, Any]) -> str:
    tag = str(ctx.get("tag", ""))
    expected = str(ctx.get("expected_tags", "")).replace("'", "")
    return f"unknown {NAMED_SECTIONS[section]} type {tag!r} (expected one of: {expected})"


def _named_items(raw: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    items = raw.get(section)
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item


def _cross_check(files: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Duplicate names, references to unknown backends, local backends shared without run_as,
    over every file (``(label, raw data)``) at once: a name is looked up once all are read.

    Done on the raw data so that these are reported together with schema errors.
    """
    errors = []
    names: dict[str, set[str]] = {}
    for section, noun in NAMED_SECTIONS.items():
        seen = names[section] = set()
        for label, raw in files:
            for index, item in _named_items(raw, section):
                if item.get("name") is None:
                    continue  # reported as missing by the schema
                name = str(item["name"])
                if name in seen:
                    errors.append(f"{label}{section}[{index}].name: duplicate {noun} name {name!r}")
                seen.add(name)
    for label, raw in files:
        for section in ("sources", "workflows"):
            for index, item in _named_items(raw, section):
                backend = item.get("backend")
                if backend is not None and str(backend) not in names["backends"]:
                    errors.append(f"{label}{section}[{index}].backend: unknown backend {str(backend)!r}")
        for index, item in _named_items(raw, "backends"):
            problem = sharing_problem(item)
            if problem:
                errors.append(f"{label}backends[{index}].allowed_groups: {problem}")
    return errors
