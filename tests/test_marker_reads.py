"""The end-marker read (backends.ssh.markers) against a job that starts and ends while it reads.

A CI run once saw a `true` task on Slurm end with no start time: the read looked for the
start marker, the job wrote both markers, and the read then found the end. Here the job's
own marker lines run at each point of the read in turn, with local bash standing in for
the SSH session.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends.base import JobSpec, JobState, JobStatus
from backends.scripts import MARKERS_DIR, end_marker_lines
from backends.ssh.markers import READ_MARKERS, parse_markers

JOB = JobSpec(tag="t1", run_id="r1", task_id="i.016", name="i.016", command="true")
KEY = f"{JOB.run_id}/{JOB.tag}"

# Runs the job to its end right after the reader's `[` test number $JOB_AT (1 = the first).
JOB_RUNS_AFTER_A_LOOK = """
looks=0
[() {
    local answer=0
    builtin [ "$@" || answer=1
    looks=$((looks + 1))
    [[ $looks == "$JOB_AT" ]] && bash "$JOB_SCRIPT" && : > "$HOME/job-ran"
    return $answer
}
"""


def run_job(home: Path, job_script: Path) -> None:
    subprocess.run(["bash", str(job_script)], env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, check=True)
    (home / "job-ran").touch()


def read_markers(home: Path, job_at: int, job_script: Path) -> dict[str, JobStatus]:
    script = JOB_RUNS_AFTER_A_LOOK + READ_MARKERS + f"m {KEY}\n"
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "JOB_AT": str(job_at), "JOB_SCRIPT": str(job_script)}
    result = subprocess.run(["bash", "-s"], input=script, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return parse_markers(result.stdout, {KEY: "4242"})


@pytest.mark.parametrize("job_at", [0, 1, 2, 3])
def test_a_job_that_starts_and_ends_during_a_read_ends_with_its_start_time(tmp_path: Path, job_at: int) -> None:
    """job_at 0: the job ran before the read; 1-3: right after the read's first, second or third look."""
    job_script = tmp_path / "job.sh"
    job_script.write_text("\n".join(["#!/bin/bash", *end_marker_lines(JOB), JOB.command, ""]))
    (tmp_path / MARKERS_DIR / JOB.run_id).mkdir(parents=True)  # as the run's earlier jobs left it
    if job_at == 0:
        run_job(tmp_path, job_script)

    first = read_markers(tmp_path, job_at, job_script)
    if not (tmp_path / "job-ran").exists() and job_at:  # the read looked fewer times than job_at
        run_job(tmp_path, job_script)
    # the next tick's read: whatever the first one missed is there now
    second = read_markers(tmp_path, 0, job_script)

    seen = [status for status in (first.get("4242"), second.get("4242")) if status is not None]
    ended = [status for status in seen if status.state == JobState.COMPLETED]
    assert len(ended) == 1, seen  # the markers are removed once an end is printed
    assert ended[0].started_at is not None and ended[0].finished_at is not None
    assert ended[0].started_at <= ended[0].finished_at
    assert ended[0].exit_code == 0
