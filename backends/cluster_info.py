"""What a backend says about its capacity and its site's limits, for the dashboard and the
engine: stored as JSON in ``Backend.cluster_info`` (re-exported by :mod:`backends.base`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PartitionInfo:
    """Nodes and CPUs of one partition (queue) of a cluster, for the dashboard."""

    partition: str
    default: bool = False
    available: str = "up"
    nodes: int = 0
    state: str = ""
    cpus_allocated: int = 0
    cpus_idle: int = 0
    cpus_other: int = 0
    cpus_total: int = 0

    @property
    def up(self) -> bool:
        return self.available.lower() in ("up", "")

    def _percent(self, part: int) -> float:
        return part * 100.0 / self.cpus_total if self.cpus_total else 0.0

    @property
    def allocated_percent(self) -> float:
        return self._percent(self.cpus_allocated)

    @property
    def other_percent(self) -> float:
        return self._percent(self.cpus_other)

    @property
    def idle_percent(self) -> float:
        return self._percent(self.cpus_idle)


@dataclass
class ClusterInfo:
    """What a backend says about its capacity; stored as JSON in ``Backend.cluster_info``."""

    partitions: list[PartitionInfo] = field(default_factory=list)
    clone_dir: str = ""
    clone_dir_mb: float | None = None
    job_history: bool | None = None  # PBS: whether finished jobs can be read back (qstat -x)
    max_array_size: int | None = None  # site limit: elements per array job
    max_submit_jobs: int | None = None  # site limit: jobs this account may have queued (enforced ones only)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ClusterInfo:
        """Tolerant of missing or malformed keys (rows written by older versions)."""
        data = data or {}
        partitions = [_partition(row) for row in data.get("partitions") or [] if isinstance(row, Mapping)]
        size = data.get("clone_dir_mb")
        return cls(
            partitions=partitions,
            clone_dir=str(data.get("clone_dir") or ""),
            clone_dir_mb=float(size) if isinstance(size, int | float) else None,
            job_history=data.get("job_history") if isinstance(data.get("job_history"), bool) else None,
            max_array_size=_count_or_none(data.get("max_array_size")),
            max_submit_jobs=_count_or_none(data.get("max_submit_jobs")),
        )


def _count_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _partition(row: Mapping[str, Any]) -> PartitionInfo:
    def count(key: str) -> int:
        try:
            return max(int(row.get(key) or 0), 0)
        except (TypeError, ValueError):
            return 0

    return PartitionInfo(
        partition=str(row.get("partition", "?")),
        default=bool(row.get("default")),
        available=str(row.get("available", "up") or "up"),
        nodes=count("nodes"),
        state=str(row.get("state", "")),
        cpus_allocated=count("cpus_allocated"),
        cpus_idle=count("cpus_idle"),
        cpus_other=count("cpus_other"),
        cpus_total=count("cpus_total"),
    )
