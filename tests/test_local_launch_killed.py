"""A local job's launcher killed (kill -9 of the worker's process group) half-way: after it
made the job's directory, before the job's runner took the job.

Found by the fault tests' reasoning about tests/test_faults.py: such a directory looked
"submitted" to the reconcile phase, and the task then waited for a runner that never
came, forever. Now the runner and the reconcile phase both try to take the job's
``claim``; whoever wins decides whether it runs, so it runs exactly once.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from backends.local.runner import LAUNCHER, RUNNER
from backends.registry import get_adapter
from runs.actions import create_run
from runs.engine import claim
from runs.models import Run
from tests.test_local_run_as import confined, runner_user  # noqa: F401  (fixtures)


def t(task_id: str, command: str) -> dict[str, object]:
    return {"id": task_id, "name": task_id, "command": command}


def kill_launcher_after_mkdir(adapter, spec) -> None:  # type: ignore[no-untyped-def]
    """Start the real launcher for ``spec`` (as the backend's run_as user, if any) and
    SIGKILL it once the job's directory exists: it blocks reading the script from stdin,
    which the test never closes."""
    umask, mode = ("027", "750") if adapter.run_as and adapter.run_as.with_sudo else ("077", "700")
    logs = (
        [adapter.default_log_path(spec, "out"), adapter.default_log_path(spec, "err")] if adapter.run_as else ["", ""]
    )
    args = [umask, mode, str(adapter.work_root), spec.tag, spec.run_id, spec.name, RUNNER, "60", *logs, "", ""]
    command = adapter._as_user(["bash", "-c", LAUNCHER, "launcher", *args])
    launcher = subprocess.Popen(command, stdin=subprocess.PIPE, cwd="/")
    try:
        deadline = time.monotonic() + 10
        while not (adapter.jobs_dir / spec.tag).is_dir():
            assert time.monotonic() < deadline, "the launcher never made the job's directory"
            time.sleep(0.01)
    finally:
        launcher.kill()
        launcher.wait()


@pytest.mark.parametrize("backend", ["local_backend", "confined"])
def test_a_job_whose_launcher_was_killed_is_submitted_again_and_runs_once(
    user, backend, run_to_end, request: pytest.FixtureRequest
):
    """``confined``: the same with run_as, where the tasks' user owns the job's directory."""
    backend = request.getfixturevalue(backend)
    shared = Path(tempfile.mkdtemp(prefix="scripthut-launch-"))
    shared.chmod(0o777)  # the run_as user appends to the ledger too
    ledger = shared / "ledger"
    try:
        run = create_run(
            owner=user,
            backend=backend,
            workflow_name="crash",
            payload=[t("a", f"echo a >> {ledger}"), t("b", f"echo b >> {ledger}")],
        )
        adapter = get_adapter(backend)
        claimed = {task.task_id: (task, spec) for task, spec, _ in claim.claim_ready(run, 10, adapter, {})}
        kill_launcher_after_mkdir(adapter, claimed["a"][1])

        run = run_to_end(run, timeout=30)
        assert run.status == Run.Status.COMPLETED
        assert sorted(ledger.read_text().split()) == ["a", "b"]
        a = run.tasks.get(task_id="a")
        assert a.submit_tag != claimed["a"][1].tag  # submitted again, under a new tag
        assert a.reason == ""
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_launcher_killed_after_the_runner_took_the_job_still_counts_as_submitted(user, local_backend, run_to_end):
    """The other side of the race: the runner was started; the job is not started twice."""
    run = create_run(owner=user, backend=local_backend, workflow_name="crash", payload=[t("a", "true")])
    adapter = get_adapter(local_backend)
    [(task, spec, script)] = claim.claim_ready(run, 10, adapter, {})
    adapter.submit([(spec, script)])  # the whole launch; then the tick died before recording it
    run = run_to_end(run, timeout=30)
    assert run.status == Run.Status.COMPLETED
    assert run.tasks.get().submit_tag == spec.tag
