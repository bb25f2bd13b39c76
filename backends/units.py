"""Durations and memory sizes as written in task definitions."""

from __future__ import annotations

import re
from functools import lru_cache

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


# A batch job longer than a year is a typo; the schedulers' own limits are lower still.
MAX_DURATION_SECONDS = 365 * 86400
MAX_MEMORY_MB = 1024**3  # 1 PiB: far above any node, and well inside a 64-bit integer


# A time limit of none at all, as Slurm writes it (it also reads "infinite"); only a
# scheduler that has such a limit takes it (BackendAdapter.unlimited_time).
UNLIMITED = "UNLIMITED"


def is_unlimited(value: str) -> bool:
    return value.strip().lower() in {"unlimited", "infinite"}


@lru_cache(maxsize=1024)  # a workflow repeats a few values over thousands of tasks
def parse_duration(value: str) -> int:
    """Seconds in a Slurm-style time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``.

    Every unit after the first is bounded (``1:99:99`` is refused): schedulers either
    refuse such a value or read it differently than the writer meant.
    """
    text = value.strip()
    days = 0
    has_days = "-" in text
    if has_days:
        day_part, _, text = text.partition("-")
        if not day_part.isdigit():
            raise ValueError(f"invalid time limit {value!r}")
        days = int(day_part)
    parts = text.split(":")
    if not text or len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid time limit {value!r} (expected e.g. 1:00:00 or 2-00:00:00)")
    hours, minutes, seconds = _clock_parts([int(p) for p in parts], has_days, value)
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"time limit {value!r} must be positive")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(f"time limit {value!r} is over the limit of {MAX_DURATION_SECONDS // 86400} days")
    return total


def _clock_parts(numbers: list[int], has_days: bool, value: str) -> tuple[int, int, int]:
    """(hours, minutes, seconds) of the part after the days, each unit after the first within range."""
    if has_days:  # D-HH, D-HH:MM, D-HH:MM:SS
        numbers = numbers + [0] * (3 - len(numbers))
        limits = (23, 59, 59)
    elif len(numbers) == 1:  # MM
        numbers, limits = [0, numbers[0], 0], (0, 0, 0)
    elif len(numbers) == 2:  # MM:SS
        numbers, limits = [0, *numbers], (0, 0, 59)
    else:  # HH:MM:SS
        limits = (0, 59, 59)
    for number, limit, unit in zip(numbers, limits, ("hours", "minutes", "seconds"), strict=True):
        if limit and number > limit:
            raise ValueError(f"invalid time limit {value!r}: {unit} must be at most {limit}")
    hours, minutes, seconds = numbers
    return hours, minutes, seconds


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``: short enough for a table cell."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


@lru_cache(maxsize=1024)
def parse_memory_mb(value: str) -> int:
    """Megabytes in ``4G``, ``512M``, ``2GB``, ``1024`` (plain numbers are MB, as in Slurm)."""
    match = _MEMORY.match(value)
    if not match:
        raise ValueError(f"invalid memory {value!r} (expected e.g. 4G or 512M)")
    amount, unit = float(match.group(1)), match.group(2).upper()
    mb = amount * _MB_PER_UNIT[unit]
    if mb > MAX_MEMORY_MB:  # also catches a number too long for a float (inf)
        raise ValueError(f"memory {value!r} is over the limit of 1P")
    if int(mb) <= 0:
        raise ValueError(f"memory {value!r} must be positive")
    return int(mb)


@lru_cache(maxsize=4096)
def clock_seconds(text: str) -> float | None:
    """Seconds in a scheduler's clock time: ``[D-]HH:MM:SS[.mmm]``, ``MM:SS.mmm`` or plain
    seconds; hours may pass 24 (PBS walltime). None for empty or unreadable values.

    Cached: a poll repeats the same values many times.
    """
    if not text:
        return None
    days = 0
    if "-" in text:
        day, _, text = text.partition("-")
        if not day.isdigit():
            return None
        days = int(day)
    total = 0.0
    for part in text.split(":"):
        try:
            total = total * 60 + float(part)
        except ValueError:
            return None
    return days * 86400 + total


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmgtp]?)(b|w|n|c)?$")
_MB_PER_SIZE_UNIT = {"": 1 / 1024**2, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}


@lru_cache(maxsize=4096)
def size_mb(text: str) -> float | None:
    """Megabytes in a size reported by a scheduler: bytes without a unit (sacct MaxRSS,
    PBS ``b``), ``5560kb``, ``1024K``, ``4G``, ``4000Mn``/``4000Mc`` (Slurm ReqMem per
    node/cpu), ``w`` words of 8 bytes (PBS)."""
    match = _SIZE.match(text.strip().lower())
    if not match:
        return None
    size = float(match.group(1)) * _MB_PER_SIZE_UNIT[match.group(2)]
    return size * 8 if match.group(3) == "w" else size
