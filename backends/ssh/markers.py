"""Reading the start and end markers job scripts leave (:func:`backends.scripts.end_marker_lines`).

One bash script for all the live jobs, run on the open SSH connection: for each
``<run id>/<tag>`` it prints ``E <key> <exit code> <end> <start> <node>`` for a job that
ended (then removes its markers) or ``S <key> <start> <node>`` for one that started, with shell
builtins only (no process per job), and nothing for a job without markers.

The end is looked at before the start: a job writes its start marker before its end
marker, so once the end is there the start is too. Read the other way round, a job that
started and ended between the two looks would end with no start time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from backends.base import JobState, JobStatus
from backends.scripts import MARKERS_DIR

READ_MARKERS = f"""
cd "$HOME/{MARKERS_DIR}" 2>/dev/null || exit 0
m() {{
    local start='' end=''
    if [ -f "$1.end" ] && read -r end < "$1.end"; then
        {{ read -r start < "$1.start"; }} 2>/dev/null
        printf 'E %s %s %s\\n' "$1" "$end" "$start"
        rm -f -- "$1.end" "$1.start"
    elif [ -f "$1.start" ] && read -r start < "$1.start" && [ -n "$start" ]; then
        printf 'S %s %s\\n' "$1" "$start"
    fi
}}
"""


def parse_markers(output: str, keys: dict[str, str]) -> dict[str, JobStatus]:
    """Job id -> status for each marker line of a job asked about (``keys``: marker key ->
    job id); garbled lines (the job's user writes these files) are left out."""
    statuses: dict[str, JobStatus] = {}
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields or fields[0] not in keys:
            continue
        job_id = keys[fields[0]]
        status = _ended(job_id, fields[1:]) if kind == "E" else _started(job_id, fields[1:]) if kind == "S" else None
        if status is not None:
            statuses[job_id] = status
    return statuses


def _ended(job_id: str, fields: list[str]) -> JobStatus | None:
    try:
        code = int(fields[0])
    except (IndexError, ValueError):
        return None
    state = JobState.COMPLETED if code == 0 else JobState.FAILED
    status = JobStatus(job_id, state, exit_code=code, reason="" if code == 0 else f"exit code {code}")
    status.finished_at = _time(fields[1:2])
    status.started_at = _time(fields[2:3])
    status.node = fields[3] if len(fields) > 3 else ""
    if status.started_at and status.finished_at:
        status.elapsed_seconds = (status.finished_at - status.started_at).total_seconds()
    return status


def _started(job_id: str, fields: list[str]) -> JobStatus | None:
    started = _time(fields[:1])
    node = fields[1] if len(fields) > 1 else ""
    return JobStatus(job_id, JobState.RUNNING, started_at=started, node=node) if started else None


def _time(fields: list[str]) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(fields[0]), tz=UTC) if fields else None
    except (ValueError, OverflowError, OSError):
        return None
