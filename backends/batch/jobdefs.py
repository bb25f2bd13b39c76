"""Which job definition a job is submitted against, in the three modes of the config.

- ``job_definition`` (locked, the default): that definition, verbatim; never registers.
  A task asking for another image gets a warning, and the definition's image.
- ``job_definition`` + ``job_definition_mode: revisions``: the definition is a template;
  a task image it does not have gets a new revision of the same name, registered once
  with the template's container properties (image swapped), roles, logs, retry and tags.
- ``default_image``: ScriptHut registers ``scripthut-<hash>`` once per image signature.

Registered definitions are kept in the database (BatchJobDefinition), per backend and
signature, so that a restart or another worker reuses them instead of registering again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.aws.clients import aws_errors
from backends.base import BackendError
from backends.batch.settings import BatchSettings
from backends.models import Backend, BatchJobDefinition

# What a registered revision keeps of its template, besides the container properties.
TEMPLATE_KEYS = (
    "parameters",
    "retryStrategy",
    "timeout",
    "tags",
    "propagateTags",
    "platformCapabilities",
    "schedulingPriority",
)
# Marks the revisions ScriptHut registers from a template: never taken as the template.
REVISION_TAG = "scripthut:revision-of"
# Auto-registered definitions: a small container (valid on Fargate too); each job
# overrides CPUs and memory.
AUTO_RESOURCES = [{"type": "VCPU", "value": "0.25"}, {"type": "MEMORY", "value": "512"}]


@dataclass(frozen=True)
class Choice:
    definition: str  # name, name:revision or ARN, as submit_job takes it
    warning: str = ""  # for the task (a locked definition ignoring its image)


class JobDefinitions:
    def __init__(self, backend: Backend, settings: BatchSettings, batch: Callable[[], Any]):
        self.backend = backend
        self.settings = settings
        self.batch = batch  # the Batch client, made when first needed
        self._template: dict[str, Any] | None = None
        self._platform: str | None = None
        self._registered: dict[str, str] = {}  # signature -> ARN, this process's copy of the table

    def for_image(self, image: str) -> Choice:
        if not self.settings.job_definition:
            return Choice(self._registered_for(self._auto_signature(image or self._default_image()), image))
        if self.settings.job_definition_mode == "revisions":
            return Choice(self._revision_for(image))
        return self._locked(image)

    # -- locked ------------------------------------------------------------------------

    def _locked(self, image: str) -> Choice:
        definition = str(self.settings.job_definition)
        if not image:
            return Choice(definition)
        try:
            own = self.template_image()
        except BackendError as exc:
            # Submitting needs no describe permission; the warning just cannot compare.
            return Choice(definition, f"image {image!r} not checked against {definition} ({exc})")
        if image == own:
            return Choice(definition)
        return Choice(
            definition,
            f"image {image!r} ignored: job definition {definition} is locked to {own!r} "
            "(job_definition_mode: locked); use job_definition_mode: revisions to run other images",
        )

    # -- revisions ---------------------------------------------------------------------

    def _revision_for(self, image: str) -> str:
        template = self.template()
        if not image or image == self.template_image():
            # The template's own revision: a bare name would mean the latest, maybe ours.
            return str(template["jobDefinitionArn"])
        signature = _digest({"template": template["jobDefinitionArn"], "image": image})
        return self._registered_for(signature, image)

    def _revision_arguments(self, image: str) -> dict[str, Any]:
        template = self.template()
        arguments: dict[str, Any] = {
            "jobDefinitionName": template["jobDefinitionName"],
            "type": template.get("type", "container"),
            "containerProperties": {**template.get("containerProperties", {}), "image": image},
        }
        arguments.update({key: template[key] for key in TEMPLATE_KEYS if template.get(key) is not None})
        arguments["tags"] = {**arguments.get("tags", {}), REVISION_TAG: template["jobDefinitionArn"][-256:]}
        return arguments

    # -- auto-registered -----------------------------------------------------------------

    def _default_image(self) -> str:
        return str(self.settings.default_image)

    def _auto_signature(self, image: str) -> str:
        roles = {"job_role_arn": self.settings.job_role_arn, "execution_role_arn": self.settings.execution_role_arn}
        return _digest({"image": image, **roles, "platform": self.platform()})

    def platform(self) -> str:
        """``FARGATE`` when the default queue runs on Fargate, else ``EC2``: an auto-registered
        definition must match the compute environments it is sent to."""
        if self._platform is None:
            queue = self.settings.aws.job_queue
            with aws_errors("DescribeJobQueues"):
                queues = self.batch().describe_job_queues(jobQueues=[queue])["jobQueues"]
            order = [e["computeEnvironment"] for q in queues for e in q.get("computeEnvironmentOrder", [])]
            kinds: set[str] = set()
            if order:
                with aws_errors("DescribeComputeEnvironments"):
                    found = self.batch().describe_compute_environments(computeEnvironments=order)
                kinds = {(e.get("computeResources") or {}).get("type", "") for e in found["computeEnvironments"]}
            self._platform = "FARGATE" if kinds and kinds <= {"FARGATE", "FARGATE_SPOT"} else "EC2"
        return self._platform

    def _auto_arguments(self, signature: str, image: str) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "image": image,
            "command": ["bash", "-c", "echo 'scripthut: every job overrides this command'"],
            "resourceRequirements": AUTO_RESOURCES,
        }
        if self.settings.job_role_arn:
            properties["jobRoleArn"] = self.settings.job_role_arn
        if self.settings.execution_role_arn:
            properties["executionRoleArn"] = self.settings.execution_role_arn
        return {
            "jobDefinitionName": f"scripthut-{signature[:16]}",
            "type": "container",
            "containerProperties": properties,
            "platformCapabilities": [self.platform()],
            "tags": {"scripthut:image": image[:256]},
        }

    # -- shared ------------------------------------------------------------------------

    def _registered_for(self, signature: str, image: str) -> str:
        """The ARN registered for ``signature``: from memory, the database, or registered now."""
        if signature in self._registered:
            return self._registered[signature]
        row = BatchJobDefinition.objects.filter(backend=self.backend, signature=signature).first()
        if row is None:
            image = image or self._default_image()
            if self.settings.job_definition:
                arguments = self._revision_arguments(image)
            else:
                arguments = self._auto_arguments(signature, image)
            with aws_errors("RegisterJobDefinition"):
                arn = self.batch().register_job_definition(**arguments)["jobDefinitionArn"]
            row, _ = BatchJobDefinition.objects.get_or_create(
                backend=self.backend, signature=signature, defaults={"image": image, "arn": arn}
            )
        self._registered[signature] = row.arn
        return row.arn

    def template(self) -> dict[str, Any]:
        """The configured job definition (for a bare name: its latest active revision not
        registered by ScriptHut)."""
        if self._template is None:
            name = str(self.settings.job_definition)
            with aws_errors(f"DescribeJobDefinitions {name}"):
                found = self.batch().describe_job_definitions(jobDefinitions=[name])["jobDefinitions"]
            ours = set(BatchJobDefinition.objects.filter(backend=self.backend).values_list("arn", flat=True))
            found = [d for d in found if d["jobDefinitionArn"] not in ours and REVISION_TAG not in d.get("tags", {})]
            active = [d for d in found if d.get("status", "ACTIVE") == "ACTIVE"] or found
            if not active:
                raise BackendError(f"job definition {name!r} does not exist (job_definition)")
            self._template = max(active, key=lambda d: int(d.get("revision", 0)))
        return self._template

    def template_image(self) -> str:
        return str(self.template().get("containerProperties", {}).get("image", ""))


def _digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
