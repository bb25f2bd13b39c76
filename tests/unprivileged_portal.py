"""The portal's side of tests/test_local_runas_helper.py, as a process of its own.

Started by root (the test suite's user) so that it can load the portal's code (the
virtualenv lives where other accounts cannot read), it then becomes the unprivileged
``portal`` account for good — no way back to root — and starts a task of a ``run_as:
per_user`` backend the only way such a portal can: through sudo and the root helper. It
prints what it saw as JSON.

    python tests/unprivileged_portal.py PORTAL_ACCOUNT TASK_ACCOUNT DATA_DIR
"""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
import uuid
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from backends.base import JobSpec, JobState, OsAccount  # noqa: E402
from backends.local.adapter import LocalAdapter  # noqa: E402
from backends.models import Backend  # noqa: E402


def become(account: str) -> None:
    entry = pwd.getpwnam(account)
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)


def start_and_follow(adapter: LocalAdapter, command: str, *, cancel: bool = False) -> dict[str, object]:
    """Submit ``command``, follow it to its end (cancelling it once it runs, with ``cancel``)."""
    run_id = uuid.uuid4().hex[:12]
    job = JobSpec(tag=f"unpriv-{run_id}", run_id=run_id, task_id="t", name="t", command=command)
    (result,) = adapter.submit([(job, adapter.render_script(job))])
    seen: dict[str, object] = {"job_id": result.job_id, "error": result.error, "work_root": str(adapter.work_root)}
    if not result.job_id:
        return seen
    deadline = time.monotonic() + 30
    status = adapter.poll([result.job_id]).statuses[result.job_id]
    while status.state in (JobState.QUEUED, JobState.RUNNING) and time.monotonic() < deadline:
        if cancel and status.state == JobState.RUNNING:
            adapter.cancel([result.job_id])
        time.sleep(0.1)
        status = adapter.poll([result.job_id]).statuses[result.job_id]
    log = adapter.read_file(str(adapter.run_dir(run_id) / "t.out"))
    found = adapter.find_submitted([job.tag, "unpriv-never-submitted"])
    return {**seen, "state": str(status.state), "exit_code": status.exit_code, "log": log, "found": found}


def main() -> None:
    portal, task_account, data_dir = sys.argv[1:4]
    become(portal)
    backend = Backend(name="unpriv", kind="local", settings={"run_as": "per_user", "os_user": task_account})
    adapter = LocalAdapter(backend, Path(data_dir), OsAccount(user_id=1, username=task_account))
    seen = start_and_follow(adapter, "id -un; echo $HOME")
    cancelled = start_and_follow(adapter, "echo started; sleep 30", cancel=True)
    print(json.dumps({"euid": os.geteuid(), "uid": os.getuid(), **seen, "cancelled": cancelled}))


if __name__ == "__main__":
    main()
