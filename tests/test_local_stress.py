"""The local backend under a tight poll loop: no successful job is ever reported failed.

Before: the status check read the exit code file, then checked whether the runner was
alive; a job that ended between the two reads was "process ended without an exit code
(killed?)" (5 of 200 in a tight loop).
"""

from __future__ import annotations

import time

import pytest

from backends.base import JobSpec, JobState
from backends.models import Backend
from backends.registry import get_adapter

JOBS = 1000
BATCH = 10


@pytest.mark.slow
@pytest.mark.django_db
def test_a_thousand_instant_jobs_polled_in_a_tight_loop_none_falsely_failed(local_backend: Backend) -> None:
    adapter = get_adapter(local_backend)
    pending: set[str] = set()
    verdicts: dict[str, JobState] = {}
    polls = 0

    def poll_once() -> None:
        nonlocal polls
        polls += 1
        for job_id, status in adapter.poll(sorted(pending)).statuses.items():
            if status.state.is_final:
                verdicts[job_id] = status.state
                pending.discard(job_id)

    # Submit in small batches and poll everything in flight after each: jobs end while
    # they are being looked at, which is when the race showed.
    for start in range(0, JOBS, BATCH):
        specs = [
            JobSpec(tag=f"stress-{i}", run_id="stress", task_id=f"t{i}", name=f"t{i}", command="true")
            for i in range(start, start + BATCH)
        ]
        results = adapter.submit([(spec, adapter.render_script(spec)) for spec in specs])
        assert all(r.job_id for r in results), [r.error for r in results if not r.job_id][:3]
        pending |= {r.job_id for r in results}
        for _ in range(3):
            poll_once()
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        poll_once()
    assert not pending, f"{len(pending)} jobs never ended"
    failed = sorted(job for job, state in verdicts.items() if state != JobState.COMPLETED)
    assert failed == [], f"{len(failed)} of {JOBS} successful jobs reported {verdicts[failed[0]]}"
    assert polls > JOBS // BATCH  # the loop really raced the jobs


@pytest.mark.django_db
def test_a_job_ending_between_the_exit_code_read_and_the_liveness_check_completed(
    local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself, made to happen every time: the runner writes the exit code and
    exits just after the poll looked for the code and just before it checks the process."""
    from backends.local import status as local
    from backends.local.adapter import LocalAdapter

    backend = get_adapter(local_backend)
    assert isinstance(backend, LocalAdapter)
    spec = JobSpec(tag="race-1", run_id="race", task_id="t", name="t", command="true")
    (result,) = backend.submit([(spec, backend.render_script(spec))])
    job_dir = backend.jobs_dir / result.job_id
    deadline = time.monotonic() + 30
    while not (job_dir / "exit_code").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    code = (job_dir / "exit_code").read_text()
    (job_dir / "exit_code").unlink()  # as it was before the runner's last step

    def runner_finishes_now(pid: int) -> bool:
        (job_dir / "exit_code").write_text(code)
        return False

    monkeypatch.setattr(local, "_alive", runner_finishes_now)
    status = backend.poll([result.job_id]).statuses[result.job_id]
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0), status.reason
