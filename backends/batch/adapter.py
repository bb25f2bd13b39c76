"""AWS Batch through its API (boto3): no SSH host, no shared filesystem.

- submit: one ``submit_job`` per job (not retried by botocore: a submit has no
  idempotency token), the job named ``<tag>_<name>`` and tagged with the tag;
- poll: ``describe_jobs`` in calls of 100 ids; the queues' active jobs are listed
  now and then (``list_jobs``) to show jobs ScriptHut did not submit;
- reconcile: a run's jobs listed by name prefix on every queue;
- cancel: ``cancel_job`` before a job starts, ``terminate_job`` after, with who asked;
- logs: the job's CloudWatch stream (:mod:`.logs`).
Job definitions: :mod:`.jobdefs`; the script and submit arguments: :mod:`.rendering`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

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
from backends.batch import parsing, rendering
from backends.batch.jobdefs import JobDefinitions
from backends.batch.logs import MERGED_STREAMS_NOTE, LogReader
from backends.batch.settings import BatchSettings
from backends.config import error_lines

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity

log = logging.getLogger("backends.batch")
P = ParamSpec("P")
R = TypeVar("R")

# Errors after which a submit_job may or may not have created the job (the request went
# out, the answer did not come back): the task stays `submitting` and is reconciled by tag.
LOST_ANSWER = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)

DESCRIBE_LIMIT = 100  # ids per describe_jobs call (AWS's limit)
EXTERNAL_LIST_SECONDS = 60  # how often the queues are listed for jobs others submitted


def fresh_clients_after_failure(method: Callable[P, R]) -> Callable[P, R]:
    """After BackendUnavailable (credentials, profile, network), build the session and
    clients again next time: fixed credentials or config are picked up without a restart."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except BackendUnavailable:
            adapter = args[0]
            assert isinstance(adapter, BatchAdapter)
            adapter.forget_clients()
            raise

    return wrapper


class AnswerLost(Exception):  # noqa: N818  (reads better at the raise site)
    """A submit_job was sent but its answer lost: whether the job exists is not known."""


class BatchAdapter(BackendAdapter):
    def __init__(self, backend: Backend, data_dir: Path, identity: ClusterIdentity | None = None):
        super().__init__(backend, data_dir, identity)
        self.job_definitions = JobDefinitions(backend, self.config, lambda: self.batch)
        self._log_streams: dict[str, tuple[str, str]] = {}  # job id -> (group, stream), once known
        self._external: list[JobStatus] = []
        self._external_at = 0.0
        self._queues_seen: set[str] = set()

    def forget_clients(self) -> None:
        for name in ("session", "batch", "submitter", "logs"):
            self.__dict__.pop(name, None)

    @cached_property
    def config(self) -> BatchSettings:
        data = {**self.settings, "name": self.name, "type": "batch"}
        try:
            return BatchSettings.model_validate(data)
        except ValidationError as exc:
            raise BackendUnavailable(f"settings of {self.name}: {'; '.join(error_lines(exc))}") from None

    @cached_property
    def session(self) -> Any:
        return clients.session(self.config.aws)

    @cached_property
    def batch(self) -> Any:
        return clients.client(self.config.aws, "batch", self.session)

    @cached_property
    def submitter(self) -> Any:
        return clients.client(self.config.aws, "batch", self.session, config=clients.NO_RETRY_CONFIG)

    @cached_property
    def logs(self) -> LogReader:
        return LogReader(clients.client(self.config.aws, "logs", self.session))

    # -- scripts and submission --------------------------------------------------------

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        return ""  # CloudWatch, found through the job (log_location)

    def render_script(self, job: JobSpec) -> str:
        return rendering.render(job)

    @fresh_clients_after_failure
    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        queues = {job.tag: rendering.job_queue(job, self.config.aws.job_queue) for job, _ in jobs}
        unusable = self.check_queues(set(queues.values()))
        results: list[SubmitResult] = []
        maybe_sent = False  # a job was (or may have been) created: never raise after that
        for job, script in jobs:
            queue = queues[job.tag]
            if queue in unusable:
                results.append(SubmitResult(tag=job.tag, error=unusable[queue], retry=True))
                continue
            try:
                results.append(self._submit_one(job, script, queue))
                maybe_sent = True
            except AnswerLost as exc:
                maybe_sent = True  # no result: the engine reconciles this tag
                log.warning("answer to submit_job of %s lost on %s: %s", job.tag, self.name, exc)
            except BackendUnavailable as exc:
                if not maybe_sent:
                    raise  # nothing submitted: the engine puts every task back
                results.append(SubmitResult(tag=job.tag, error=str(exc), retry=True))
            except (BackendError, ValueError) as exc:
                results.append(SubmitResult(tag=job.tag, error=str(exc)))
        return results

    def _submit_one(self, job: JobSpec, script: str, queue: str) -> SubmitResult:
        choice = self.job_definitions.for_image(job.image)
        arguments = rendering.submit_arguments(job, script, choice.definition, queue, self.config.retry_attempts)
        try:
            with aws_errors("SubmitJob"):
                job_id = self.submitter.submit_job(**arguments)["jobId"]
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, LOST_ANSWER):
                raise AnswerLost(str(exc)) from exc
            raise
        return SubmitResult(tag=job.tag, job_id=job_id, warning=choice.warning)

    def check_queues(self, queues: set[str]) -> dict[str, str]:
        """Queues jobs cannot go to now, with why; the default queue missing or off makes
        the whole backend unavailable (its tasks wait)."""
        with aws_errors("DescribeJobQueues"):
            found = self.batch.describe_job_queues(jobQueues=sorted(queues))["jobQueues"]
        by_name = {q["jobQueueName"]: q for q in found} | {q["jobQueueArn"]: q for q in found}
        unusable: dict[str, str] = {}
        for queue in queues:
            described = by_name.get(queue)
            if described is None:
                unusable[queue] = f"job queue {queue!r} does not exist in {self.config.aws.region}"
            elif described.get("state") != "ENABLED":
                unusable[queue] = f"job queue {queue!r} is {described.get('state')}"
        default = self.config.aws.job_queue
        if default in unusable:
            raise BackendUnavailable(f"{unusable[default]} (aws.job_queue)")
        return unusable

    # -- polling -----------------------------------------------------------------------

    def describe(self, job_ids: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every job of ``job_ids`` Batch still knows, in calls of 100 ids."""
        for start in range(0, len(job_ids), DESCRIBE_LIMIT):
            with aws_errors("DescribeJobs"):
                yield from self.batch.describe_jobs(jobs=list(job_ids[start : start + DESCRIBE_LIMIT]))["jobs"]

    @fresh_clients_after_failure
    def poll(self, job_ids: Sequence[str]) -> PollResult:
        statuses: dict[str, JobStatus] = {}
        for job in self.describe(job_ids):
            status = parsing.job_status(job)
            statuses[status.job_id] = status
            if status.partition:
                self._queues_seen.add(status.partition)
        ours = list(statuses.values())
        for job_id in job_ids:
            statuses.setdefault(job_id, JobStatus(job_id, JobState.UNKNOWN, reason="unknown to AWS Batch"))
        external = [s for s in self.external_jobs() if s.job_id not in statuses]
        return PollResult(statuses=statuses, observed=ours + external)

    def external_jobs(self) -> list[JobStatus]:
        """Active jobs on the queues, listed at most every EXTERNAL_LIST_SECONDS (5 calls a queue)."""
        if time.monotonic() - self._external_at < EXTERNAL_LIST_SECONDS:
            return self._external
        seen: list[JobStatus] = []
        for queue in sorted({self.config.aws.job_queue, *self._queues_seen}):
            try:
                seen += self._active_on(queue)
            except BackendError as exc:
                # Only what is shown besides our jobs; a missing queue is reported by submit.
                log.warning("cannot list the jobs of queue %s on %s: %s", queue, self.name, exc)
        self._external, self._external_at = seen, time.monotonic()
        return seen

    def _active_on(self, queue: str) -> list[JobStatus]:
        found = []
        for state in parsing.ACTIVE_STATES:
            for summary in self._list_jobs(jobQueue=queue, jobStatus=state):
                status = parsing.job_status(summary)
                status.partition = queue
                found.append(status)
        return found

    def _list_jobs(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        with aws_errors("ListJobs"):
            for page in self.batch.get_paginator("list_jobs").paginate(**arguments):
                yield from page["jobSummaryList"]

    @fresh_clients_after_failure
    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        # Tags are sh-<run>-<task>-<random>: list each run's jobs once by name prefix, on
        # every queue (a task's partition may name any). With a filter, ListJobs returns
        # jobs in every state.
        prefixes = sorted({tag.rsplit("-", 2)[0] + "-" for tag in tags})
        wanted = set(tags)
        with aws_errors("DescribeJobQueues"):
            queues = [q["jobQueueName"] for q in self.batch.describe_job_queues()["jobQueues"]]
        found: dict[str, str] = {}
        for queue in queues:
            for prefix in prefixes:
                name_filter = [{"name": "JOB_NAME", "values": [prefix + "*"]}]
                for summary in self._list_jobs(jobQueue=queue, filters=name_filter):
                    tag = parsing.tag_of(summary)
                    if tag in wanted:
                        found.setdefault(tag, summary["jobId"])
        return found

    # -- cancel ------------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancel_with_reasons(dict.fromkeys(job_ids, ""))

    @fresh_clients_after_failure
    def cancel_with_reasons(self, reasons: Mapping[str, str]) -> None:
        """``cancel_job`` for jobs not started yet, ``terminate_job`` for started ones."""
        for job in self.describe(list(reasons)):
            if job.get("status") in ("SUCCEEDED", "FAILED"):
                continue
            why = reasons.get(job["jobId"]) or "cancelled"
            reason = f"{parsing.CANCEL_REASON_PREFIX}: {why}"[:1024]
            started = job.get("status") not in parsing.NOT_STARTED_STATES
            with aws_errors("TerminateJob" if started else "CancelJob"):
                if started:
                    self.batch.terminate_job(jobId=job["jobId"], reason=reason)
                else:
                    self.batch.cancel_job(jobId=job["jobId"], reason=reason)

    # -- logs --------------------------------------------------------------------------

    def log_stream(self, job_id: str) -> tuple[str, str] | None:
        """(log group, stream) of a job, once Batch has created its stream."""
        if job_id in self._log_streams:
            return self._log_streams[job_id]
        for job in self.describe([job_id]):
            stream = parsing.container_detail(job, "logStreamName")
            if stream:
                options = (parsing.container_detail(job, "logConfiguration") or {}).get("options") or {}
                group = str(options.get("awslogs-group") or self.config.log_group)
                self._log_streams[job_id] = (group, str(stream))
                return group, str(stream)
        return None

    def log_location(self, log: TaskLog) -> str:
        if not log.job_id:
            return ""
        try:
            found = self.log_stream(log.job_id)
        except (BackendUnavailable, BackendError):
            found = None  # where it is matters less than why it cannot be read (read_log says)
        where = f"CloudWatch {found[0]} {found[1]}" if found else f"CloudWatch {self.config.log_group}"
        return where if log.stream == "output" else f"{where} (with the output)"

    @fresh_clients_after_failure
    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        if log.stream != "output":
            return MERGED_STREAMS_NOTE
        found = self.log_stream(log.job_id)
        if found is None:
            raise FileNotFoundError(f"job {log.job_id} has no log stream yet")
        return self.logs.read(found[0], found[1], max_bytes)

    # -- dashboard ---------------------------------------------------------------------

    @fresh_clients_after_failure
    def cluster_info(self) -> ClusterInfo:
        """The default queue's compute environments: their vCPUs (max and in use)."""
        queue = self.config.aws.job_queue
        with aws_errors("DescribeJobQueues"):
            queues = self.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
        if not queues:
            raise BackendUnavailable(f"job queue {queue!r} does not exist in {self.config.aws.region} (aws.job_queue)")
        order = [e["computeEnvironment"] for e in queues[0].get("computeEnvironmentOrder", [])]
        environments: list[dict[str, Any]] = []
        if order:
            with aws_errors("DescribeComputeEnvironments"):
                environments = self.batch.describe_compute_environments(computeEnvironments=order)[
                    "computeEnvironments"
                ]
        total = sum(int((e.get("computeResources") or {}).get("maxvCpus", 0)) for e in environments)
        used = sum(int((e.get("computeResources") or {}).get("desiredvCpus", 0)) for e in environments)
        state = queues[0].get("state", "")
        partition = PartitionInfo(
            partition=queue,
            default=True,
            available="up" if state == "ENABLED" else "down",
            nodes=len(environments),
            state=f"{state} {queues[0].get('status', '')}".strip().lower(),
            cpus_allocated=min(used, total),
            cpus_idle=max(total - used, 0),
            cpus_total=total,
        )
        return ClusterInfo(partitions=[partition])


Adapter = BatchAdapter
