"""What every parser derives the same way from a job status it has read."""

from __future__ import annotations

import re

from backends.base import JobState, JobStatus

# How schedulers and kernels word an out-of-memory kill in a job's reason.
OUT_OF_MEMORY = re.compile(r"out[ _-]?of[ _-]?memory|\boom\b|oom[ _-]?kill", re.IGNORECASE)


def settle_flags(status: JobStatus) -> JobStatus:
    """Set ``out_of_memory`` (also when the reason says so) and ``never_started``."""
    if status.reason and OUT_OF_MEMORY.search(status.reason):
        status.out_of_memory = True
    # A held job the scheduler dropped (its parent failed or was forgotten) ends like this.
    status.never_started = status.state.is_final and status.state != JobState.COMPLETED and status.started_at is None
    return status
