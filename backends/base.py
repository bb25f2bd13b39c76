"""The one small interface every backend adapter implements.

It is batch-shaped on purpose: a remote backend answers a whole cycle's worth of
work in one round trip (submit a list, poll a list, cancel a list). The run engine
talks only to this interface and never knows which scheduler is behind it.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.models import Backend


class BackendUnavailable(Exception):  # noqa: N818  (reads better at the raise site)
    """The backend cannot be reached (DNS, refused, auth, host key, timeout, credentials).

    Raised only when nothing was done, so the caller may simply try again later.
    """


class BackendError(Exception):
    """The backend answered, but the operation failed."""


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # the scheduler has no record of the job

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class JobSpec:
    """A task rendered for a backend: everything a submission script needs."""

    tag: str  # unique per task attempt; the job carries it so a crashed submit can be found
    run_id: str
    task_id: str
    name: str
    command: str
    working_dir: str = "~"
    partition: str = "normal"
    cpus: int = 1
    memory: str = "4G"
    time_limit: str = "1:00:00"
    env: dict[str, str] = field(default_factory=dict)
    extra_init: str = ""
    output_file: str = ""
    error_file: str = ""
    gres: str = ""
    image: str = ""
    # Scheduler-native dependencies: job ids already on the scheduler, and tags of
    # jobs earlier in the same submit batch whose ids are not known yet.
    after_job_ids: list[str] = field(default_factory=list)
    after_tags: list[str] = field(default_factory=list)


@dataclass
class SubmitResult:
    tag: str
    job_id: str = ""
    error: str = ""  # set when the scheduler rejected the job; both empty: not sent, queue it again
    # The scheduler could not take the job just now (controller unreachable, submit limit):
    # queue it again instead of failing the task.
    retry: bool = False


@dataclass(slots=True)
class JobStatus:
    job_id: str
    state: JobState
    exit_code: int | None = None
    reason: str = ""
    name: str = ""
    user: str = ""
    partition: str = ""
    cpus: int | None = None
    node: str = ""
    tag: str = ""
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_seconds: float | None = None
    cpu_efficiency: float | None = None  # TotalCPU / (Elapsed x AllocCPUS), 0..1
    max_rss_mb: float | None = None
    requested_mem_mb: float | None = None

    @property
    def queue_wait_seconds(self) -> float | None:
        if self.submitted_at and self.started_at:
            return max(0.0, (self.started_at - self.submitted_at).total_seconds())
        return None


@dataclass
class PollResult:
    statuses: dict[str, JobStatus]  # every job id asked about (UNKNOWN if not found)
    observed: list[JobStatus] = field(default_factory=list)  # everything on the backend, ours or not


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class BackendAdapter(ABC):
    """Talks to one configured backend. Instances are cached per process (see registry)."""

    # True where jobs can wait on other jobs inside the scheduler (afterok).
    supports_native_dependencies = False

    def __init__(self, backend: Backend, data_dir: Path):
        self.backend = backend
        self.name = backend.name
        self.settings = backend.settings
        self.data_dir = data_dir

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        """Where a job's output (``out``) or error (``err``) goes when the task does not say."""
        log_dir = self.settings.get("log_dir") or "~/.cache/scripthut/logs"
        return f"{log_dir.rstrip('/')}/{job.run_id}/{safe_filename(job.task_id)}.{stream}"

    @abstractmethod
    def render_script(self, job: JobSpec) -> str:
        """The submission script for one job (every value quoted)."""

    @abstractmethod
    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        """Submit (job, script) pairs in one go; one result per job, in order.

        Raises BackendUnavailable only if nothing was submitted.
        """

    @abstractmethod
    def poll(self, job_ids: Sequence[str]) -> PollResult:
        """States of the given jobs, plus every job seen on the backend."""

    @abstractmethod
    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        """Job ids of jobs carrying these tags, for reconciling an interrupted submit."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel these jobs (one call for the whole list)."""

    @abstractmethod
    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        """The last ``max_bytes`` of a file on the backend. FileNotFoundError if absent."""

    @abstractmethod
    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        """Run a shell command on the backend (the caller quotes every value in it)."""

    def cluster_info(self) -> dict[str, object]:
        """Nodes and CPUs per partition, disk usage: shown on the dashboard (optional)."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections."""


def safe_filename(text: str) -> str:
    """A task id made safe to use as one path component."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return cleaned.lstrip(".") or "task"
