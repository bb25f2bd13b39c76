"""Which task definition a task runs, in the three modes of the config (as Batch's).

- ``task_definition`` (``task_definition_mode: locked``, the default): that definition,
  verbatim (family, family:revision or ARN); never registers. ECS cannot override a
  container's image, so a task asking for another image gets a warning and the
  definition's image.
- ``task_definition`` + ``task_definition_mode: revisions``: the definition is a
  template; a task image it does not have gets a new revision of its family, registered
  once with the template's properties (only the container's image swapped) and tagged
  with the template and the image, by which it is found again after a restart.
- ``default_image``: ScriptHut registers the family ``scripthut-<hash>`` once per image
  and roles (awsvpc with subnets, else bridge; the launch type's compatibility; the
  awslogs driver to ``log_group``). It is found again by family after a restart: no second registration.

Every task overrides the command and the size (``rendering.run_task_arguments``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.aws.clients import aws_errors, error_code
from backends.base import BackendError
from backends.ecs.settings import EcsSettings

CONTAINER = "main"  # the container of a registered definition
STREAM_PREFIX = "scripthut"
# Tags of the revisions registered from a template (task_definition_mode: revisions).
REVISION_OF = "scripthut:revision-of"
IMAGE_TAG = "scripthut:image"
REVISIONS_LOOKED_AT = 50  # the newest revisions of a family searched for one of ours
# What a revision keeps of its template (RegisterTaskDefinition's arguments).
TEMPLATE_KEYS = (
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "ephemeralStorage",
    "runtimePlatform",
)


@dataclass(frozen=True)
class Definition:
    arn: str
    container: str  # the container the overrides name
    image: str
    log_group: str = ""  # the awslogs group and stream prefix, if the container logs there
    stream_prefix: str = ""

    def log_stream(self, task_arn: str) -> tuple[str, str] | None:
        """(group, stream) of a task's log, as the awslogs driver names it."""
        if not (self.log_group and self.stream_prefix):
            return None
        return self.log_group, f"{self.stream_prefix}/{self.container}/{task_arn.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class DefinitionChoice:
    definition: Definition
    warning: str = ""


class TaskDefinitions:
    def __init__(self, settings: EcsSettings, ecs: Callable[[], Any]):
        self.settings = settings
        self.ecs = ecs  # the ECS client, made when first needed
        self._known: dict[str, Definition] = {}  # family, name or ARN asked -> definition

    def for_image(self, image: str) -> DefinitionChoice:
        if self.settings.task_definition:
            definition = self.describe(self.settings.task_definition, self.settings.container_name)
            if image and image != definition.image and self.settings.task_definition_mode == "revisions":
                return DefinitionChoice(self.revision(definition, image))
            if image and image != definition.image:
                warning = (
                    f"image {image!r} ignored: task definition {self.settings.task_definition} runs "
                    f"{definition.image!r} (ECS cannot override an image); use task_definition_mode: "
                    "revisions or default_image to run other images"
                )
                return DefinitionChoice(definition, warning)
            return DefinitionChoice(definition)
        return DefinitionChoice(self.registered(image or str(self.settings.default_image)))

    def describe(self, name: str, container: str | None = None) -> Definition:
        if name in self._known:
            return self._known[name]
        with aws_errors(f"DescribeTaskDefinition {name}"):
            try:
                found = self.ecs().describe_task_definition(taskDefinition=name)["taskDefinition"]
            except Exception as exc:
                if error_code(exc) in ("ClientException", "ResourceNotFoundException"):
                    raise BackendError(f"task definition {name!r} does not exist (task_definition)") from None
                raise
        definition = _definition(found, container)
        self._known[name] = definition
        return definition

    def registered(self, image: str) -> Definition:
        """The ``scripthut-<hash>`` definition for the image: described, else registered now."""
        family = f"scripthut-{self._signature(image)[:16]}"
        if family in self._known:
            return self._known[family]
        try:
            definition = self.describe(family)
            if definition.image == image:
                return definition
        except BackendError:
            pass  # not registered yet
        with aws_errors("RegisterTaskDefinition"):
            found = self.ecs().register_task_definition(**self._arguments(family, image))["taskDefinition"]
        self._known[family] = _definition(found, CONTAINER)
        return self._known[family]

    def revision(self, template: Definition, image: str) -> Definition:
        """The revision of the template's family that runs ``image``: made once (found
        again by its tags, also after a restart), else registered now."""
        key = f"{template.arn} {image}"
        if key in self._known:
            return self._known[key]
        found = self._tagged_revision(template, image)
        if found is None:
            with aws_errors(f"DescribeTaskDefinition {template.arn}"):
                source = self.ecs().describe_task_definition(taskDefinition=template.arn)["taskDefinition"]
            with aws_errors("RegisterTaskDefinition"):
                found = self.ecs().register_task_definition(**_revision_arguments(source, template, image))
            found = found["taskDefinition"]
        self._known[key] = _definition(found, template.container)
        return self._known[key]

    def _tagged_revision(self, template: Definition, image: str) -> dict[str, Any] | None:
        """A revision registered for this template and image before (newest first)."""
        family = template.arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]
        with aws_errors(f"ListTaskDefinitions {family}"):
            arns = self.ecs().list_task_definitions(familyPrefix=family, sort="DESC")["taskDefinitionArns"]
        for arn in arns[:REVISIONS_LOOKED_AT]:
            with aws_errors(f"DescribeTaskDefinition {arn}"):
                answer = self.ecs().describe_task_definition(taskDefinition=arn, include=["TAGS"])
            tags = {tag["key"]: tag["value"] for tag in answer.get("tags") or []}
            if tags.get(REVISION_OF) == template.arn[-256:] and tags.get(IMAGE_TAG) == image[:256]:
                return dict(answer["taskDefinition"])
        return None

    def _signature(self, image: str) -> str:
        value = {
            "image": image,
            "launch_type": self.settings.launch_type,
            "awsvpc": bool(self.settings.subnets),
            "execution_role_arn": self.settings.execution_role_arn,
            "task_role_arn": self.settings.task_role_arn,
            "log_group": self.settings.log_group,
            "region": self.settings.aws.region,
        }
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()

    def _arguments(self, family: str, image: str) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": image,
            "essential": True,
            "command": ["bash", "-c", "echo 'scripthut: every task overrides this command'"],
            # The smallest Fargate size; each task overrides it. Container-level values too.
            "cpu": 256,
            "memory": 512,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.settings.log_group,
                    "awslogs-region": self.settings.aws.region,
                    "awslogs-stream-prefix": STREAM_PREFIX,
                    "awslogs-create-group": "true",
                },
            },
        }
        arguments: dict[str, Any] = {
            "family": family,
            # awsvpc (Fargate's only mode) when subnets are given; else EC2's bridge.
            "networkMode": "awsvpc" if self.settings.subnets else "bridge",
            "requiresCompatibilities": [self.settings.launch_type],
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": [container],
            "tags": [{"key": "scripthut:image", "value": image[:256]}],
        }
        if self.settings.execution_role_arn:
            arguments["executionRoleArn"] = self.settings.execution_role_arn
        if self.settings.task_role_arn:
            arguments["taskRoleArn"] = self.settings.task_role_arn
        return arguments


def _definition(found: dict[str, Any], container: str | None) -> Definition:
    containers = found.get("containerDefinitions") or []
    chosen = next((c for c in containers if c.get("name") == container), None) if container else None
    chosen = chosen or (containers[0] if containers else {})
    if container and chosen.get("name") != container:
        raise BackendError(f"task definition {found.get('family')} has no container {container!r} (container_name)")
    options = (chosen.get("logConfiguration") or {}).get("options") or {}
    return Definition(
        arn=str(found.get("taskDefinitionArn", "")),
        container=str(chosen.get("name", "")),
        image=str(chosen.get("image", "")),
        log_group=str(options.get("awslogs-group", "")),
        stream_prefix=str(options.get("awslogs-stream-prefix", "")),
    )


def _revision_arguments(source: dict[str, Any], template: Definition, image: str) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments for the template with its container's image swapped."""
    containers = [
        {**c, "image": image} if c.get("name") == template.container else c
        for c in source.get("containerDefinitions") or []
    ]
    arguments: dict[str, Any] = {"family": source["family"], "containerDefinitions": containers}
    arguments.update({key: source[key] for key in TEMPLATE_KEYS if source.get(key) not in (None, [], {})})
    arguments["tags"] = [{"key": REVISION_OF, "value": template.arn[-256:]}, {"key": IMAGE_TAG, "value": image[:256]}]
    return arguments
