"""The base of every backend's settings model.

Kept apart from :mod:`backends.config`, which imports every backend's settings module
through the registry: the settings modules import this one, never that one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


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


class BackendSettings(ConfigModel):
    """One item of the ``backends`` list: ``name``, ``type`` and the backend's own keys."""

    name: str = Field(min_length=1)
    # Django groups whose members may use the backend; empty: everyone, but staff only
    # for a local backend (its tasks run on the portal host).
    allowed_groups: list[str] = Field(default_factory=list)

    # The least a config of this kind needs besides name and type: the tests validate it
    # and build a backend of every registered kind from it.
    example: ClassVar[dict[str, Any]] = {}

    @classmethod
    def priced_as(cls, settings: Mapping[str, Any], partition: str, partitions: Mapping[str, str]) -> tuple[str, bool]:
        """The instance type a task in ``partition`` on such a backend (its stored
        ``settings``) is priced as, "" if none, and whether it had the whole instance.
        ``partitions``: ``pricing.partitions`` of the config file. Here: its partition's
        mapping, a share of the instance (runs/costing/estimate.py)."""
        return partitions.get(partition, ""), False

    if TYPE_CHECKING:
        # Each backend declares these itself, with its own default: a field's place in a
        # model decides the order of its validation errors, which stays as it was.
        type: str
        max_concurrent: int
