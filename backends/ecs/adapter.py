"""AWS ECS through its API (boto3): one ECS task per ScriptHut task, no SSH host.

- submit: one ``run_task`` per job with ``clientToken`` = the tag (a retried call starts
  nothing twice), ``startedBy`` and tags carrying the tag; on Fargate the size is rounded
  up to a valid one and the rounding shown on the task;
- poll: ``describe_tasks`` in calls of 100 ARNs;
- reconcile: ``list_tasks`` by ``startedBy`` (the tag), running and stopped;
- cancel: ``stop_task`` with a reason naming who asked;
- logs: the container's awslogs stream in CloudWatch (the Batch backend's reader).
Task definitions: :mod:`.taskdefs`; the script and RunTask arguments: :mod:`.rendering`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions
from pydantic import ValidationError

from backends.aws import clients
from backends.aws.clients import aws_errors
from backends.base import (
    BackendAdapter,
    BackendError,
    BackendUnavailable,
    ClusterInfo,
    JobSpec,
    JobState,
    JobStatus,
    PartitionInfo,
    PollResult,
    SubmitResult,
    TaskLog,
)
from backends.batch.logs import LogReader
from backends.config import error_lines
from backends.ecs import parsing, rendering
from backends.ecs.settings import EcsSettings
from backends.ecs.taskdefs import Definition, TaskDefinitions

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity

log = logging.getLogger("backends.ecs")

DESCRIBE_LIMIT = 100  # task ARNs per describe_tasks call (AWS's limit)
MERGED_STREAMS_NOTE = (
    "ECS's awslogs driver writes a task's standard output and standard error to one CloudWatch log stream: "
    "both are in the output tab."
)
# The request went out, the answer did not come back (after botocore's retries, each
# with the same clientToken): the task stays `submitting` and is reconciled by startedBy.
LOST_ANSWER = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)


class EcsAdapter(BackendAdapter):
    def __init__(self, backend: Backend, data_dir: Path, identity: ClusterIdentity | None = None):
        super().__init__(backend, data_dir, identity)
        self.task_definitions = TaskDefinitions(self.config, lambda: self.ecs)
        self._definitions: dict[str, Definition] = {}  # task ARN -> its definition, once seen

    def forget_clients(self) -> None:
        for name in ("session", "ecs", "logs"):
            self.__dict__.pop(name, None)

    @cached_property
    def config(self) -> EcsSettings:
        data = {**self.settings, "name": self.name, "type": "ecs"}
        try:
            return EcsSettings.model_validate(data)
        except ValidationError as exc:
            raise BackendUnavailable(f"settings of {self.name}: {'; '.join(error_lines(exc))}") from None

    @cached_property
    def session(self) -> Any:
        return clients.session(self.config.aws)

    @cached_property
    def ecs(self) -> Any:
        return clients.client(self.config.aws, "ecs", self.session)

    @cached_property
    def logs(self) -> LogReader:
        return LogReader(clients.client(self.config.aws, "logs", self.session))

    def _fresh_on_unavailable(self, exc: BackendUnavailable) -> BackendUnavailable:
        """Fixed credentials or config are picked up next time, without a restart."""
        self.forget_clients()
        return exc

    # -- scripts and submission --------------------------------------------------------

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        return ""  # CloudWatch, found through the task (log_location)

    def render_script(self, job: JobSpec) -> str:
        rendering.size(job, self.config.launch_type)  # too big for Fargate: fails the task now
        return rendering.render(job)

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        try:
            self.check_cluster()
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__
        results: list[SubmitResult] = []
        maybe_sent = False  # a task was (or may have been) started: never raise after that
        for job, script in jobs:
            try:
                result = self._submit_one(job, script)
            except LostAnswer as exc:
                maybe_sent = True  # no result: the engine reconciles this tag
                log.warning("answer to run_task of %s lost on %s: %s", job.tag, self.name, exc)
                continue
            except BackendUnavailable as exc:
                self.forget_clients()
                if not maybe_sent:
                    raise  # nothing started: the engine puts every task back
                result = SubmitResult(tag=job.tag, error=str(exc), retry=True)
            except (BackendError, ValueError) as exc:
                result = SubmitResult(tag=job.tag, error=str(exc))
            maybe_sent = maybe_sent or bool(result.job_id)
            results.append(result)
        return results

    def _submit_one(self, job: JobSpec, script: str) -> SubmitResult:
        task_size = rendering.size(job, self.config.launch_type)
        choice = self.task_definitions.for_image(job.image)
        definition = choice.definition
        arguments = rendering.run_task_arguments(
            job, script, self.config, definition.arn, definition.container, task_size
        )
        try:
            with aws_errors("RunTask"):
                answer = self.ecs.run_task(**arguments)
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, LOST_ANSWER):
                raise LostAnswer(str(exc)) from exc
            raise
        if not answer.get("tasks"):
            # Capacity, a missing resource...: ECS started nothing; the task waits and is tried again.
            failures = "; ".join(f"{f.get('reason', '')} {f.get('detail', '')}".strip() for f in answer["failures"])
            return SubmitResult(tag=job.tag, error=f"RunTask: {failures or 'no task started'}", retry=True)
        arn = str(answer["tasks"][0]["taskArn"])
        self._definitions[arn] = definition
        warning = "; ".join(w for w in (task_size.note, choice.warning) if w)
        return SubmitResult(tag=job.tag, job_id=arn, warning=warning)

    def check_cluster(self) -> None:
        """BackendUnavailable (tasks wait) when the cluster does not exist or is not ACTIVE."""
        cluster = self.config.cluster
        with aws_errors("DescribeClusters"):
            found = self.ecs.describe_clusters(clusters=[cluster])["clusters"]
        if not found:
            raise BackendUnavailable(f"ECS cluster {cluster!r} does not exist in {self.config.aws.region} (cluster)")
        if found[0].get("status") != "ACTIVE":
            raise BackendUnavailable(f"ECS cluster {cluster!r} is {found[0].get('status')} (cluster)")

    # -- polling -----------------------------------------------------------------------

    def describe(self, arns: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every task of ``arns`` ECS still knows, in calls of 100 ARNs."""
        for start in range(0, len(arns), DESCRIBE_LIMIT):
            with aws_errors("DescribeTasks"):
                answer = self.ecs.describe_tasks(
                    cluster=self.config.cluster, tasks=list(arns[start : start + DESCRIBE_LIMIT]), include=["TAGS"]
                )
            yield from answer["tasks"]

    def _container_of(self, task: dict[str, Any]) -> str:
        known = self._definitions.get(str(task.get("taskArn")))
        return known.container if known else (self.config.container_name or "main")

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        statuses: dict[str, JobStatus] = {}
        try:
            for task in self.describe(job_ids):
                status = parsing.task_status(task, self._container_of(task))
                statuses[status.job_id] = status
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__
        ours = list(statuses.values())
        for job_id in job_ids:
            statuses.setdefault(job_id, JobStatus(job_id, JobState.UNKNOWN, reason="unknown to AWS ECS"))
        return PollResult(statuses=statuses, observed=ours)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        """Tasks started with each tag (``startedBy``), whether still running or stopped."""
        found: dict[str, str] = {}
        try:
            for tag in tags:
                for desired in ("RUNNING", "STOPPED"):
                    arguments = {"cluster": self.config.cluster, "startedBy": tag[:128], "desiredStatus": desired}
                    with aws_errors("ListTasks"):
                        for page in self.ecs.get_paginator("list_tasks").paginate(**arguments):
                            for arn in page["taskArns"]:
                                found.setdefault(tag, str(arn))
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__
        return found

    # -- cancel ------------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancel_with_reasons(dict.fromkeys(job_ids, ""))

    def cancel_with_reasons(self, reasons: Mapping[str, str]) -> None:
        try:
            for task in self.describe(list(reasons)):
                if task.get("lastStatus") == "STOPPED":
                    continue
                why = reasons.get(str(task["taskArn"])) or "cancelled"
                reason = f"{parsing.CANCEL_REASON_PREFIX}: {why}"[:255]
                with aws_errors("StopTask"):
                    self.ecs.stop_task(cluster=self.config.cluster, task=task["taskArn"], reason=reason)
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__

    # -- logs --------------------------------------------------------------------------

    def log_stream(self, task_arn: str) -> tuple[str, str] | None:
        """(log group, stream) of a task, if its container logs with the awslogs driver."""
        definition = self._definitions.get(task_arn)
        if definition is None:
            for task in self.describe([task_arn]):
                definition = self.task_definitions.describe(str(task.get("taskDefinitionArn", "")))
                self._definitions[task_arn] = definition
        return definition.log_stream(task_arn) if definition else None

    def log_location(self, log: TaskLog) -> str:
        if not log.job_id:
            return ""
        try:
            found = self.log_stream(log.job_id)
        except (BackendUnavailable, BackendError):
            found = None  # read_log says why it cannot be read
        where = f"CloudWatch {found[0]} {found[1]}" if found else f"CloudWatch {self.config.log_group}"
        return where if log.stream == "output" else f"{where} (with the output)"

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        if log.stream != "output":
            return MERGED_STREAMS_NOTE
        try:
            found = self.log_stream(log.job_id)
            if found is None:
                raise FileNotFoundError(f"task {log.job_id} writes no awslogs stream (its task definition)")
            return self.logs.read(found[0], found[1], max_bytes)
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__

    # -- dashboard ---------------------------------------------------------------------

    def cluster_info(self) -> ClusterInfo:
        cluster = self.config.cluster
        try:
            with aws_errors("DescribeClusters"):
                found = self.ecs.describe_clusters(clusters=[cluster])["clusters"]
        except BackendUnavailable as exc:
            raise self._fresh_on_unavailable(exc) from exc.__cause__
        if not found:
            raise BackendUnavailable(f"ECS cluster {cluster!r} does not exist in {self.config.aws.region} (cluster)")
        described = found[0]
        running, pending = int(described.get("runningTasksCount", 0)), int(described.get("pendingTasksCount", 0))
        partition = PartitionInfo(
            partition=cluster,
            default=True,
            available="up" if described.get("status") == "ACTIVE" else "down",
            nodes=int(described.get("registeredContainerInstancesCount", 0)),
            state=f"{str(described.get('status', '')).lower()}, {running} running, {pending} pending",
        )
        return ClusterInfo(partitions=[partition])


class LostAnswer(Exception):  # noqa: N818  (reads better at the raise site)
    """A run_task was sent but its answer lost: whether the task started is not known."""


Adapter = EcsAdapter
