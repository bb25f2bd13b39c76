"""A finished task's last steps, over SSH (the spec's SSM path, one session per task):
read its exit code from the sentinel, copy its log to
``<data_dir>/ec2-logs/<run_id>/<task_id>.log``, then terminate the instance."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from backends.base import BackendUnavailable, JobState, JobStatus
from backends.ec2.connector import InstanceConnector, local_copy
from backends.ec2.instances import Ec2Instances, Instance
from backends.ec2.userdata import DONE_PATH, LOG_PATH

log = logging.getLogger("backends.ec2")

# How long a finished task waits for its log to be copied before it is finished without
# it (the instance would otherwise bill until its safety timer).
LOG_COPY_PATIENCE = 600.0
FINISH_PARALLEL = 8  # SSH sessions at once
EXIT_REASONS = {
    124: "time limit reached",
    137: "time limit reached (killed)",
    125: "docker could not pull or run the image",
}


class Finisher:
    def __init__(self, connector: InstanceConnector, instances: Ec2Instances, data_dir: Path):
        self.connector = connector
        self.instances = instances
        self.data_dir = data_dir
        self._first_seen: dict[str, float] = {}

    def finish_all(
        self, instances: list[Instance], codes: dict[str, int], statuses: dict[str, JobStatus]
    ) -> dict[str, JobStatus]:
        """Finish these instances' tasks, several SSH sessions at a time (each over SSM takes seconds)."""
        if not instances:
            return {}
        with ThreadPoolExecutor(max_workers=min(FINISH_PARALLEL, len(instances))) as pool:
            done = pool.map(lambda i: self.finish(i, codes[i.id], statuses[i.id]), instances)
            return {status.job_id: status for status in done}

    def finish(self, instance: Instance, code: int, status: JobStatus) -> JobStatus:
        """``status`` as the task ended (or still RUNNING while its log cannot be copied yet)."""
        first_seen = self._first_seen.setdefault(instance.id, time.monotonic())
        try:
            code = self._collect(instance)
        except (BackendUnavailable, OSError, paramiko.SSHException, ValueError) as exc:
            if time.monotonic() - first_seen < LOG_COPY_PATIENCE:
                log.warning(
                    "ec2: %s finished (exit code %s); copying its log failed, will retry: %s", instance.id, code, exc
                )
                status.reason = f"finished (exit code {code}); copying its log failed, will retry: {exc}"
                return status
            log.warning("ec2: finishing %s without its log: %s", instance.id, exc)
        self.instances.terminate_later(instance.id)
        self._first_seen.pop(instance.id, None)
        now = datetime.now(UTC)
        status.state = JobState.COMPLETED if code == 0 else JobState.FAILED
        status.exit_code = code
        status.reason = exit_reason(code)
        status.finished_at = now
        if status.started_at:
            status.elapsed_seconds = (now - status.started_at).total_seconds()
        return status

    def _collect(self, instance: Instance) -> int:
        """One SSH session: the sentinel's exit code, and the log copied here."""
        target = local_copy(self.data_dir, self._tag(instance, "run"), self._tag(instance, "task"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        with self.connector.sftp(instance.id) as sftp:
            with sftp.open(self.connector.instance_path(instance.id, DONE_PATH)) as done:
                code = int(done.read().decode().strip())
            try:
                sftp.get(self.connector.instance_path(instance.id, LOG_PATH), str(partial))
            except FileNotFoundError:
                partial.write_text("(the instance wrote no log)\n")
        os.replace(partial, target)
        return code

    def _tag(self, instance: Instance, name: str) -> str:
        return instance.tags.get(self.instances.tag_key(name), "") or instance.id

    def read_live(self, instance_id: str, max_bytes: int) -> str:
        """The tail of a running task's log, read from its instance."""
        with self.connector.sftp(instance_id) as sftp:
            path = self.connector.instance_path(instance_id, LOG_PATH)
            try:
                size = sftp.stat(path).st_size or 0
            except FileNotFoundError as exc:
                raise FileNotFoundError("the task has written no output yet") from exc
            with sftp.open(path) as handle:
                handle.seek(max(0, size - max_bytes))
                return handle.read().decode(errors="replace")


def exit_reason(code: int) -> str:
    """What the task's reason says about its exit code (nothing for 0)."""
    if code == 0:
        return ""
    what = EXIT_REASONS.get(code)
    return f"{what} (exit code {code})" if what else f"exit code {code}"


def ended_without_log(status: JobStatus, code: int, instance_state: str) -> JobStatus:
    """The task of an instance that went away after its sentinel was read: its exit code
    stands; its log could not be copied."""
    status.state = JobState.COMPLETED if code == 0 else JobState.FAILED
    status.exit_code = code
    note = f"log not copied: the instance was {instance_state} first"
    status.reason = f"{exit_reason(code)}; {note}" if code else note
    status.finished_at = datetime.now(UTC)
    return status
