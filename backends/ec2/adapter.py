"""AWS EC2: one instance per task (``type: ec2``).

- submit: ``run_instances`` per task (user data from :mod:`.userdata`), never above
  ``max_instances`` live instances: a task above the cap waits, and says so.
- poll: one ``DescribeInstances`` for all the backend's instances, the sentinels of
  running ones through one SSM Run Command (:mod:`.sentinels`); SSH (:mod:`.connector`)
  only for a finished task, to read its exit code and copy its log before terminating.
- between polls (``read_ends``, every ``sentinels_every`` seconds): the same SSM read
  only; ``DescribeInstances`` only once it found a task that finished.
- reconciling: every poll sees all the backend's instances, so an instance no live task
  owns (its task finished, was cancelled, or is unknown: a crash left it) is terminated;
  an instance launched by a tick that died before recording it is found by its submit
  tag (``find_submitted``) and adopted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions
from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from backends.aws.clients import error_code, session
from backends.base import (
    BackendAdapter,
    BackendError,
    BackendUnavailable,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    TaskLog,
)
from backends.ec2.connector import InstanceConnector, local_copy
from backends.ec2.finish import Finisher, ended_without_log
from backends.ec2.instances import LIVE_STATES, Ec2Instances, Instance, instance_type_for
from backends.ec2.sentinels import RunCommandSentinels
from backends.ec2.settings import Ec2Settings
from backends.ec2.userdata import render_user_data
from backends.scripts import script_body

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity

log = logging.getLogger("backends.ec2")

DEFAULT_CONNECTOR = "backends.ec2.connector.SsmConnector"
# RunInstances errors that say "not now" (capacity, limits) or "the backend's config is
# wrong" (subnet, AMI, profile): the task waits with the reason instead of failing.
WAIT_CODES = {
    "InsufficientInstanceCapacity",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "InvalidSubnetID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Malformed",
    "InvalidGroup.NotFound",
    "InvalidParameterValue",
    "Unsupported",
}
STOPPED = ("shutting-down", "terminated", "stopping", "stopped")
# An instance no task owns is terminated once this old (setting SCRIPTHUT_EC2_ORPHAN_GRACE_SECONDS).
ORPHAN_GRACE_SECONDS = 300
# The request may have reached AWS: the answer, not the request, was lost.
ANSWER_LOST = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)


class LaunchOutcomeUnknown(RuntimeError):
    """RunInstances may have started the instance, but its answer was lost. Escaping the
    submit leaves the tasks ``submitting``: the next tick finds the instance by its tag
    (and a launch again with the same ClientToken would not start a second one)."""


class Adapter(BackendAdapter):
    def __init__(self, backend: Backend, data_dir: Path, identity: ClusterIdentity | None = None):
        super().__init__(backend, data_dir, identity)
        self.config = Ec2Settings.model_validate({**self.settings, "name": self.name, "type": "ec2"})
        self.calls: Counter[str] = Counter()  # AWS API calls by operation, for the benchmark
        self._lock = threading.Lock()
        self.read_ends_every = self.config.sentinels_every

    # -- AWS clients, built on first use (a bad profile or region is then a status, not a crash)

    @cached_property
    def instances(self) -> Ec2Instances:
        return Ec2Instances(self.config, self.name, session(self.config.aws), self.calls)

    @cached_property
    def sentinels(self) -> RunCommandSentinels:
        return RunCommandSentinels(self.config, self.name, session(self.config.aws), self.calls)

    @cached_property
    def connector(self) -> InstanceConnector:
        kind = import_string(getattr(django_settings, "SCRIPTHUT_EC2_CONNECTOR", None) or DEFAULT_CONNECTOR)
        connector: InstanceConnector = kind(self.config, session(self.config.aws), self.calls)
        return connector

    @cached_property
    def finisher(self) -> Finisher:
        return Finisher(self.connector, self.instances, self.data_dir)

    # -- jobs

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        # The container's stdout and stderr are one log, copied here when the task ends.
        return str(local_copy(self.data_dir, job.run_id, job.task_id))

    def render_script(self, job: JobSpec) -> str:
        return "#!/bin/bash\n" + script_body(job)

    def user_data(self, job: JobSpec, script: str) -> str:
        image = job.image or self.config.default_image
        if not image:
            raise ValueError("no container image: set image on the task or default_image on the backend")
        return render_user_data(
            image=image,
            script=script,
            time_limit=job.time_limit,
            idle_terminate_seconds=self.config.idle_terminate_seconds,
        )

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        with self._lock:
            # Counted on AWS, not in the database: an instance is billed whoever launched it.
            room = self.config.max_instances - len(self.instances.ours(LIVE_STATES))
            results: list[SubmitResult] = []
            for job, script in jobs:
                if room <= 0:
                    reason = f"waiting for an instance: max_instances ({self.config.max_instances}) are running"
                    results.append(SubmitResult(job.tag, error=reason, retry=True))
                    continue
                result = self._launch(job, script, first=not results)
                room -= bool(result.job_id)
                results.append(result)
            return results

    def _launch(self, job: JobSpec, script: str, *, first: bool) -> SubmitResult:
        try:
            instance_id = self.instances.launch(job, self.user_data(job, script))
        except ValueError as exc:
            return SubmitResult(job.tag, error=str(exc))
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, ANSWER_LOST):
                raise LaunchOutcomeUnknown(f"launching task {job.task_id}: {exc}") from exc
            if first:
                raise  # nothing was launched: the engine puts every task back
            return SubmitResult(job.tag, error=str(exc), retry=True)
        except BackendError as exc:
            code = error_code(exc.__cause__) if exc.__cause__ else ""
            return SubmitResult(job.tag, error=str(exc), retry=code in WAIT_CODES)
        log.info("ec2 %s: launched %s for task %s", self.name, instance_id, job.task_id)
        return SubmitResult(job.tag, job_id=instance_id)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        tag_key = self.instances.tag_key("tag")
        return {i.tags[tag_key]: i.id for i in self.instances.with_tags(tags) if tag_key in i.tags}

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        with self._lock:
            self.instances.doomed = []
            everything = self.instances.ours()
            statuses = self._statuses(job_ids, everything)
            self._terminate_orphans(everything, set(job_ids))
            self.instances.terminate_doomed()  # finished, late, stopped and orphaned: one call
            if any(s.state == JobState.RUNNING for s in statuses.values()):
                self.sentinels.send()
            # Observed: what is still there (terminated instances stay listed for an hour).
            here = [i for i in everything if i.state in LIVE_STATES]
            observed = [statuses.get(i.id) or describe(i, self.instances) for i in here]
            return PollResult(statuses=statuses, observed=observed)

    def read_ends(self, jobs: Mapping[str, tuple[str, str]]) -> PollResult:
        """Between polls: the tasks the previous sentinel read found finished, finished
        (exit code, log copied, instance terminated); then the sentinels read again, for
        the next tick. An SSM call or two; EC2 is asked only when a task finished."""
        if not jobs:
            return PollResult(statuses={})
        with self._lock:
            self.instances.doomed = []
            codes = self.sentinels.collect()
            ended = [job_id for job_id in jobs if job_id in codes]
            statuses: dict[str, JobStatus] = {}
            if ended:
                statuses = self._statuses(ended, self.instances.with_ids(ended), codes)
                self.instances.terminate_doomed()
            self.sentinels.send()
            return PollResult(statuses={j: s for j, s in statuses.items() if s.state.is_final})

    def _statuses(
        self, job_ids: Sequence[str], everything: list[Instance], codes: dict[str, int] | None = None
    ) -> dict[str, JobStatus]:
        """Each job's status: from its instance's state, or, once the previous Run Command
        found its sentinel, from finishing it (exit code read, log copied). ``codes``: the
        sentinels read already (else they are collected here)."""
        by_id = {i.id: i for i in everything}
        codes = self.sentinels.collect() if codes is None else codes
        statuses = {job_id: self._status(job_id, by_id.get(job_id)) for job_id in job_ids}
        ended = [by_id[j] for j in job_ids if j in codes and j in by_id]
        # Gone after its task finished (its safety timer, someone else): the exit code stands.
        for instance in (i for i in ended if i.state in STOPPED):
            statuses[instance.id] = ended_without_log(statuses[instance.id], codes[instance.id], instance.state)
        finished = [i for i in ended if i.state == "running"]
        return statuses | self.finisher.finish_all(finished, codes, statuses)

    def _status(self, job_id: str, instance: Instance | None) -> JobStatus:
        if instance is None:
            return JobStatus(job_id, JobState.UNKNOWN)
        status = describe(instance, self.instances)
        if instance.state == "pending" and self._late(instance):
            self.instances.terminate_later(instance.id)
            limit = self.config.startup_timeout_seconds
            status.state, status.reason = JobState.FAILED, f"instance did not reach running within {limit}s"
        elif instance.state in STOPPED:
            if instance.state in ("stopping", "stopped"):
                self.instances.terminate_later(instance.id)
            status.state = JobState.FAILED
            why = instance.state_reason or "no reason given"
            status.reason = f"instance {instance.state} before the task finished: {why}"
        return status

    def _late(self, instance: Instance) -> bool:
        return instance.launch_time is not None and self._age(instance) > self.config.startup_timeout_seconds

    def _terminate_orphans(self, everything: list[Instance], live_job_ids: set[str]) -> None:
        """Instances no live task owns: their task finished, was cancelled, or the
        portal never recorded them (the engine adopts those through find_submitted
        first, in the same tick). Nothing is left running and billing. A young one is
        spared: a tick elsewhere may be launching it right now (its lease expired)."""
        grace = getattr(django_settings, "SCRIPTHUT_EC2_ORPHAN_GRACE_SECONDS", ORPHAN_GRACE_SECONDS)
        orphans = [
            i.id
            for i in everything
            if i.id not in live_job_ids and i.state in (*LIVE_STATES, "stopped") and self._age(i) >= grace
        ]
        if orphans:
            log.warning("ec2 %s: terminating %d instances no live task owns: %s", self.name, len(orphans), orphans)
            self.instances.doomed += orphans

    @staticmethod
    def _age(instance: Instance) -> float:
        if instance.launch_time is None:
            return float("inf")
        return (datetime.now(UTC) - instance.launch_time).total_seconds()

    def cancel(self, job_ids: Sequence[str]) -> None:
        existing = {i.id for i in self.instances.ours(LIVE_STATES)}
        self.instances.terminate([j for j in job_ids if j in existing])

    # -- logs

    def log_location(self, log: TaskLog) -> str:
        return log.path

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        if log.stream == "error":
            return "(the container's output and errors are one log: see the output tab)\n"
        path = Path(log.path)
        if path.is_file():
            return tail(path, max_bytes)
        if not log.job_id:
            raise FileNotFoundError("the task has not started")
        # Still running: read it live from the instance (one SSH session, on demand).
        return self.finisher.read_live(log.job_id, max_bytes)


def describe(instance: Instance, instances: Ec2Instances) -> JobStatus:
    """What an instance says about its task, before any sentinel is read."""
    states = {"pending": JobState.QUEUED, "running": JobState.RUNNING}
    return JobStatus(
        job_id=instance.id,
        state=states.get(instance.state, JobState.RUNNING),
        reason=f"instance {instance.id} is starting" if instance.state == "pending" else "",
        name=instance.tags.get(instances.tag_key("task"), ""),
        partition=instance.instance_type,
        node=f"{instance.id} ({instance.instance_type})",
        tag=instance.tags.get(instances.tag_key("tag"), ""),
        submitted_at=instance.launch_time,
        started_at=instance.launch_time if instance.state != "pending" else None,
    )


def tail(path: Path, max_bytes: int) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - max_bytes))
        return handle.read().decode(errors="replace")


__all__ = ["Adapter", "instance_type_for"]
