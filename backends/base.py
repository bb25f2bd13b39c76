"""The one small interface every backend adapter implements.

It is batch-shaped on purpose: a remote backend answers a whole cycle's worth of
work in one round trip (submit a list, poll a list, cancel a list). The run engine
talks only to this interface and never knows which scheduler is behind it.
"""

from __future__ import annotations

import enum
import stat
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from backends.cluster_info import ClusterInfo as ClusterInfo
from backends.cluster_info import PartitionInfo as PartitionInfo

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity


class BackendUnavailable(Exception):  # noqa: N818  (reads better at the raise site)
    """The backend cannot be reached (DNS, refused, auth, host key, timeout, credentials).

    Raised only when nothing was done, so the caller may simply try again later.
    """


class BackendError(Exception):
    """The backend answered, but the operation failed."""


class FileRefused(BackendError, PermissionError):
    """A file ScriptHut will not read or write for a task: a special file (under /proc,
    /sys or /dev, a device, FIFO or socket) or, on a confining backend, a file outside
    where the task's files may be. The message says why."""


# Reading these could block (FIFOs, devices) or show the reader's own secrets (/proc).
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


def is_under(path: str, root: str) -> bool:
    """True if the absolute ``path`` is ``root`` or inside it (both already resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def refuse_special(path: str, mode: int) -> None:
    """Raise FileRefused unless ``path`` (resolved) with ``st_mode`` ``mode`` is a plain file."""
    if any(is_under(path, root) for root in SPECIAL_ROOTS):
        raise FileRefused(f"{path} is a special file (under /proc, /sys or /dev)")
    if not stat.S_ISREG(mode):
        raise FileRefused(f"{path} is not a regular file")


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
    generates_source: str = ""  # the task's generated file, for backends that check where it is
    # Scheduler-native dependencies: job ids already on the scheduler, and tags of
    # jobs earlier in the same submit batch whose ids are not known yet.
    after_job_ids: list[str] = field(default_factory=list)
    after_tags: list[str] = field(default_factory=list)
    # An element of a job array (:meth:`BackendAdapter.as_array_element`): the array's tag,
    # which the scheduler's job carries, and this job's index in it. ``tag`` is then
    # ``<array_tag>_<index>``.
    array_tag: str = ""
    array_index: int = 0


@dataclass
class SubmitLimits:
    """What the site lets this account submit now (:meth:`BackendAdapter.submit_limits`)."""

    max_array_size: int | None = None  # elements per array job (indices 0..n-1); None: no limit
    max_queued: int | None = None  # jobs the account may have queued (MaxSubmitJobs); None: no limit
    queued: int = 0  # jobs it has queued now (array elements count one each)
    limit_name: str = "the site's limit"  # how the site calls max_queued, for waiting reasons

    @property
    def room(self) -> int | None:
        return None if self.max_queued is None else max(0, self.max_queued - self.queued)

    def waiting_reason(self, submitted: int) -> str:
        """Why tasks wait once ``submitted`` more jobs went: "1,000 jobs queued of MaxSubmitJobs 1,000"."""
        return f"{self.queued + submitted:,} jobs queued of {self.limit_name} {self.max_queued or 0:,}"


@dataclass
class SubmitResult:
    tag: str
    job_id: str = ""
    error: str = ""  # set when the scheduler rejected the job; both empty: not sent, queue it again
    # The scheduler could not take the job just now (controller unreachable, submit limit):
    # queue it again instead of failing the task.
    retry: bool = False
    # Refused because a job it was to wait on (native dependency) is no longer on the
    # scheduler, or was not submitted earlier in the same batch: the engine submits it
    # again later, without scheduler-held dependencies.
    parent_gone: bool = False
    # Submitted, but not quite as asked (an AWS Batch task image a locked job definition
    # ignores): shown on the task.
    warning: str = ""


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
    # The scheduler says the job was killed for using more memory than it had.
    out_of_memory: bool = False
    # The job ended without ever starting: the scheduler dropped it (for a job held on
    # dependencies: because a parent failed, or had already left the scheduler's memory).
    never_started: bool = False

    @property
    def queue_wait_seconds(self) -> float | None:
        if self.submitted_at and self.started_at:
            return max(0.0, (self.started_at - self.submitted_at).total_seconds())
        return None


@dataclass
class PollResult:
    statuses: dict[str, JobStatus]  # every job id asked about (UNKNOWN if not found)
    observed: list[JobStatus] = field(default_factory=list)  # everything on the backend, ours or not


@dataclass(frozen=True)
class TaskLog:
    """One stream of a task's output, as recorded when the task was submitted."""

    job_id: str
    stream: str  # "output" or "error"
    path: str  # the task's output_file / error_file; relative paths are relative to working_dir
    working_dir: str
    run_id: str = ""  # for backends that confine a task's files to its run's directory
    owner_id: int | None = None  # the run's owner: on a per_user backend, read as their account


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class OsAccount:
    """A portal user's OS account on a ``local`` backend with ``run_as: per_user``: their
    tasks run as it (read from the config, not stored; see backends.local.accounts)."""

    user_id: int
    username: str  # the OS account
    pk: None = None
    updated_at: None = None


if TYPE_CHECKING:
    Identity: TypeAlias = ClusterIdentity | OsAccount


class BackendAdapter(ABC):
    """Talks to one configured backend. Instances are cached per process (see registry).

    What every backend has: render a job script, submit / poll / cancel lists of jobs,
    find jobs by tag after an interrupted submit, and read a task's log. Backends with a
    shell on the other side (SSH, local) also implement :class:`ShellAccess`.
    """

    # True where jobs can wait on other jobs inside the scheduler (afterok).
    supports_native_dependencies = False
    # True where a job is running once submit returns and a poll is cheap (local
    # processes): the tick polls again right after submitting.
    starts_jobs_at_submit = False
    # True where the scheduler runs a job with no time limit at all (a task's
    # time_limit "UNLIMITED"); elsewhere such a task is refused when the run is created.
    unlimited_time = False

    def __init__(self, backend: Backend, data_dir: Path, identity: Identity | None = None):
        self.backend = backend
        self.name = backend.name
        self.settings = backend.settings
        self.data_dir = data_dir
        # The user account this adapter acts as, on a per_user backend; None: the config's.
        # (A ClusterIdentity on SSH backends; an OsAccount on local ones.)
        self.identity = identity

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        """Where a job's output (``out``) or error (``err``) goes when the task does not say."""
        log_dir = self.settings.get("log_dir") or "~/.cache/scripthut/logs"
        name = self.array_log_name(job) if job.array_tag else safe_filename(job.task_id)
        return f"{log_dir.rstrip('/')}/{job.run_id}/{name}.{stream}"

    # -- job arrays (optional): the engine groups a run's ready jobs by shape ----------

    def array_log_name(self, job: JobSpec) -> str:
        """How an array element's default log file is named, in the scheduler's own
        placeholders for the array's job id and the element's index (Slurm: ``%A_%a``)."""
        return f"{job.array_tag}_{job.array_index}"

    def array_shape(self, job: JobSpec) -> Hashable | None:
        """What a job shares with the other elements of an array it may go in (resources,
        environment init, log naming); None: it goes as a plain job. Jobs of one run with
        equal shapes are submitted as one array job."""
        return None

    def as_array_element(self, job: JobSpec, array_tag: str, index: int) -> JobSpec:
        """``job`` as element ``index`` of the array tagged ``array_tag``: its own tag
        ``<array_tag>_<index>``, default log files named per element."""
        element = replace(job, tag=f"{array_tag}_{index}", array_tag=array_tag, array_index=index)
        if job.output_file == self.default_log_path(job, "out"):
            element.output_file = self.default_log_path(element, "out")
        if job.error_file == self.default_log_path(job, "err"):
            element.error_file = self.default_log_path(element, "err")
        return element

    def submit_limits(self) -> SubmitLimits:
        """The site's limits on what may be submitted now (array size, queued jobs)."""
        return SubmitLimits()

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

    read_ends_every = 0.0  # seconds between two end-marker reads (:meth:`read_ends`); 0: none

    def read_ends(self, jobs: Mapping[str, tuple[str, str]]) -> PollResult:
        """Those of these jobs (id -> (run id, tag)) with an end/start marker: no scheduler query."""
        return PollResult(statuses={}, observed=[])

    @abstractmethod
    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        """Job ids of jobs carrying these tags, for reconciling an interrupted submit."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel these jobs (one call for the whole list)."""

    def cancel_with_reasons(self, reasons: Mapping[str, str]) -> None:
        """Cancel the jobs ``reasons`` maps to why (who cancelled), for schedulers that
        record a reason (AWS Batch); the others just cancel."""
        self.cancel(list(reasons))

    @abstractmethod
    def log_location(self, log: TaskLog) -> str:
        """Where this log lives, for people: a path on the backend, a log stream, ..."""

    @abstractmethod
    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        """The last ``max_bytes`` of a task's log. FileNotFoundError if not written yet."""

    def read_task_file(self, run_id: str, path: str, max_bytes: int = 256 * 1024) -> str:
        """The last ``max_bytes`` of a file a task of run ``run_id`` wrote (its
        ``generates_source``). Backends that confine task files check where it is now."""
        if not isinstance(self, ShellAccess):
            raise BackendError(f"backend {self.name!r} cannot read files back")
        return self.read_file(path, max_bytes)

    def cluster_info(self) -> ClusterInfo:
        """Nodes and CPUs per partition, disk usage: shown on the dashboard (optional)."""
        return ClusterInfo()

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections."""


@runtime_checkable
class ShellAccess(Protocol):
    """What backends with a shell on the other side (SSH, local) can do besides jobs:
    run workflow commands and git, read files such as a ``generates_source`` output."""

    name: str  # the backend's name, for messages

    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        """Run a shell command on the backend (the caller quotes every value in it)."""
        ...

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        """The last ``max_bytes`` of a file on the backend. FileNotFoundError if absent."""
        ...


class FileLogs:
    """``log_location``/``read_log`` for backends whose logs are files they can read."""

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        raise NotImplementedError

    def log_location(self, log: TaskLog) -> str:
        return resolve_in(log.path, log.working_dir) if log.path else ""

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        location = self.log_location(log)
        if not location:
            raise FileNotFoundError(f"task has no {log.stream} file")
        return self.read_file(location, max_bytes)


def resolve_in(path: str, directory: str) -> str:
    """A task's file as the backend's shell sees it: absolute and ``~`` paths as written,
    relative ones inside ``directory`` (the task's working directory)."""
    if path.startswith(("/", "~")):
        return path
    return f"{directory.rstrip('/')}/{path}"


def safe_filename(text: str) -> str:
    """A task id made safe to use as one path component."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return cleaned.lstrip(".") or "task"
