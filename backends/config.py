"""Per-type backend settings, as written in the ``backends`` list of scripthut.yaml.

A Backend row keeps ``name``, ``type``, ``max_concurrent`` and ``poll_interval`` in
columns; everything else (ssh block, account, aws block, ...) is the validated model
dumped into ``Backend.settings``. Unknown keys are accepted (old config files must keep
loading) and reported as warnings by :func:`unknown_keys`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

# Backend columns, not settings.
ROW_FIELDS = frozenset({"name", "type", "max_concurrent", "poll_interval"})

# Listed in the original product's docs as planned; say so instead of "unknown type".
UNSUPPORTED_TYPES = {"ecs": "ecs backends are not supported yet"}


class ConfigModel(BaseModel):
    """Base for config file models: lenient about extra keys and YAML numbers."""

    # extra="allow" keeps unknown keys on the model so that they can be reported with
    # their key path; they are dropped again when the model is dumped.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    @model_serializer(mode="wrap")
    def _drop_extra(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self.model_extra or {}:
            data.pop(key, None)
        return data


class SshConfig(ConfigModel):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_path: str | None = None
    cert_path: str | None = None
    known_hosts: str | None = None
    allow_unknown_host_keys: bool = False


class AwsConfig(ConfigModel):
    profile: str | None = None
    region: str = Field(min_length=1)


class BatchAwsConfig(AwsConfig):
    job_queue: str = Field(min_length=1)


class LocalBackend(ConfigModel):
    """Runs tasks as processes on the portal host (ours; not in the original product)."""

    name: str = Field(min_length=1)
    type: Literal["local"]
    max_concurrent: int = Field(default=4, ge=1)
    poll_interval: int = Field(default=2, ge=1)
    log_dir: str | None = None


class _SshBackend(ConfigModel):
    name: str = Field(min_length=1)
    ssh: SshConfig
    account: str | None = None
    login_shell: bool = False
    max_concurrent: int = Field(default=100, ge=1)
    clone_dir: str = "~/scripthut-repos"
    log_dir: str = "~/.cache/scripthut/logs"
    # Let the scheduler hold dependent jobs (afterok) instead of waiting in the portal.
    native_dependencies: bool = True


class SlurmBackend(_SshBackend):
    type: Literal["slurm"]


class PbsBackend(_SshBackend):
    type: Literal["pbs"]
    queue: str | None = None


class BatchBackend(ConfigModel):
    name: str = Field(min_length=1)
    type: Literal["batch"]
    aws: BatchAwsConfig
    job_definition: str | None = None
    job_definition_mode: Literal["locked", "revisions"] = "locked"
    default_image: str | None = None
    job_role_arn: str | None = None
    execution_role_arn: str | None = None
    retry_attempts: int = Field(default=1, ge=1, le=10)
    log_group: str = "/aws/batch/job"
    max_concurrent: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _needs_a_job_definition(self) -> BatchBackend:
        if not self.job_definition and not self.default_image:
            raise ValueError("either job_definition or default_image must be set")
        return self


class Ec2Backend(ConfigModel):
    name: str = Field(min_length=1)
    type: Literal["ec2"]
    aws: AwsConfig
    ami: str = Field(min_length=1)
    subnet_id: str = Field(min_length=1)
    security_group_ids: list[str] = Field(default_factory=list)
    instance_types: dict[str, str] = Field(default_factory=lambda: {"default": "c5.xlarge"})
    default_image: str | None = None
    instance_profile_arn: str | None = None
    ssh_user: str = "ec2-user"
    max_instances: int = Field(default=20, ge=1)
    idle_terminate_seconds: int = Field(default=1800, ge=0)
    startup_timeout_seconds: int = Field(default=600, ge=1)
    tag_prefix: str = "scripthut"
    extra_tags: dict[str, str] = Field(default_factory=dict)
    max_concurrent: int = Field(default=20, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _max_concurrent_from_max_instances(cls, data: Any) -> Any:
        # One instance per task, so by default as many tasks as instances may run.
        if isinstance(data, dict) and "max_concurrent" not in data and "max_instances" in data:
            data = {**data, "max_concurrent": data["max_instances"]}
        return data


AnyBackend = LocalBackend | SlurmBackend | PbsBackend | BatchBackend | Ec2Backend
BackendConfig = Annotated[AnyBackend, Field(discriminator="type")]

BACKEND_SETTINGS: dict[str, type[BaseModel]] = {
    "local": LocalBackend,
    "slurm": SlurmBackend,
    "pbs": PbsBackend,
    "batch": BatchBackend,
    "ec2": Ec2Backend,
}


def backend_settings(backend: BaseModel) -> dict[str, Any]:
    """What goes in ``Backend.settings``: the validated model minus the row columns."""
    return backend.model_dump(mode="json", exclude=set(ROW_FIELDS))


def validate_backend_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the settings of a Backend row of type ``kind``.

    Defaults are filled in. Unlike the config file, unknown keys are errors here: this
    is what the admin form runs, and a typo there should not vanish silently.
    Raises ValueError with one ``key.path: message`` line per problem.
    """
    if kind in UNSUPPORTED_TYPES:
        raise ValueError(f"type: {UNSUPPORTED_TYPES[kind]}")
    model = BACKEND_SETTINGS.get(kind)
    if model is None:
        raise ValueError(f"type: unknown backend type {kind!r}")
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
        raise ValueError("\n".join(f"{path}: unknown key" for path in unknown))
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


def unknown_keys(value: object, path: str = "") -> list[str]:
    """Key paths of the keys a validated config model tree did not know."""

    def join(key: str) -> str:
        return f"{path}.{key}" if path else key

    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [join(str(key)) for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_keys(getattr(value, name), join(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += unknown_keys(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_keys(item, join(str(key)))
    return found
