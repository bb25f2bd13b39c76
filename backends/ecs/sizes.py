"""Fargate's task sizes: a task asking for N CPUs and M MiB runs on the smallest valid
size that holds both (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# CPU units (1024 a vCPU) -> (least MiB, most MiB, step MiB)
FARGATE_SIZES: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),  # 512, 1024, 2048 (1536 is not offered)
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}
MAX_CPU_UNITS = max(FARGATE_SIZES)
MAX_MEMORY = FARGATE_SIZES[MAX_CPU_UNITS][1]


@dataclass(frozen=True)
class Size:
    cpu: int  # CPU units
    memory: int  # MiB
    note: str = ""  # how the asked size was rounded, if it was


def _memory_for(cpu: int, memory: int) -> int | None:
    least, most, step = FARGATE_SIZES[cpu]
    if cpu == 256 and least < memory <= 1024:
        return 1024
    if memory <= least:
        return least
    rounded = least + math.ceil((memory - least) / step) * step
    return rounded if rounded <= most else None


def fargate_size(cpus: int, memory_mb: int) -> Size:
    """The smallest Fargate size with at least ``cpus`` vCPUs and ``memory_mb`` MiB;
    ValueError if none is that large."""
    wanted_cpu = max(cpus, 0) * 1024
    for cpu in sorted(FARGATE_SIZES):
        if cpu < wanted_cpu:
            continue
        memory = _memory_for(cpu, memory_mb)
        if memory is None:
            continue
        note = ""
        if (cpu, memory) != (wanted_cpu, memory_mb):
            note = (
                f"Fargate size {cpu / 1024:g} vCPU / {memory} MiB "
                f"(asked {cpus} CPU{'s' if cpus != 1 else ''} / {memory_mb} MiB, rounded up to a valid size)"
            )
        return Size(cpu, memory, note)
    raise ValueError(
        f"{cpus} CPUs / {memory_mb} MiB does not fit on Fargate "
        f"(at most {MAX_CPU_UNITS // 1024} vCPU and {MAX_MEMORY} MiB a task)"
    )
