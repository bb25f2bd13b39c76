"""A local backend with ``run_as: per_user``: each portal user's tasks run as their own OS
account, so users who share the backend cannot read or change each other's jobs (issue 18,
finding 1). Real accounts (``sh-<name>-t``, made once per machine), a real engine, real tasks.

The hostile scenario: alice's task tries to read carol's (staff) and bob's output and job
scripts, append to their logs and kill their jobs through their pid files; on a shared
``run_as`` account every one of these worked (carol's run ended failed, exit 143, with
"FORGED BY ALICE" in her log).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from backends.base import BackendUnavailable, TaskLog
from backends.config import validate_backend_settings
from backends.identity import adapter_as
from backends.local.adapter import LocalAdapter
from backends.local.settings import network_of
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import ApiToken, Run, Task
from runs.workflows.parse import WorkflowError
from tests.conftest import LOCAL_USERS
from tests.markers import require
from tests.os_accounts import ensure_account

Runner = Callable[..., Run]
ACCOUNT = "sh-{username}-t"


@pytest.fixture
def accounts() -> dict[str, Any]:
    return {name: ensure_account(ACCOUNT.format(username=name)) for name in ("alice", "bob", "carol")}


@pytest.fixture
def per_user(db: None, accounts: dict[str, Any]) -> Backend:
    backend = Backend.objects.create(
        name="peruser",
        kind=Backend.Kind.LOCAL,
        settings={"run_as": "per_user", "os_user": ACCOUNT},
        max_concurrent=8,
        poll_interval=1,
    )
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    return backend


@pytest.fixture
def gate() -> Iterator[Path]:
    """A directory where only root can make ``go``: the victims' jobs run until the test
    makes it, so that alice's attacks certainly meet running jobs."""
    directory = Path(tempfile.mkdtemp(prefix="per-user-gate-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    (directory / "go").touch()
    shutil.rmtree(directory)


def start(owner: User, backend: Backend, command: str, **fields: Any) -> Run:
    payload = [{"id": "t", "name": "t", "command": command, **fields}]
    return create_run(owner=owner, backend=backend, payload=payload, workflow_name="w")


def adapter_of(backend: Backend, owner: User) -> LocalAdapter:
    adapter = adapter_as(backend, owner.pk)
    assert isinstance(adapter, LocalAdapter)
    return adapter


def running_job(run: Run) -> Task:
    for _ in range(100):
        tick_due_backends(force=True)
        task = run.tasks.get()
        if task.state == Task.State.RUNNING:
            return task
    raise AssertionError(f"{run.tasks.values_list('state', 'reason').get()}")


def attacks(label: str, backend: Backend, victim: User, task: Task) -> str:
    """Shell lines alice's task runs against ``victim``'s running ``task``, each printing
    ``<label>-<attack>: done`` or ``: refused``."""
    adapter = adapter_of(backend, victim)
    job = adapter.jobs_dir / task.job_id
    out = shlex.quote(task.output_file)
    tries = {
        "read-output": f"cat {out}",
        "read-script": f"cat {shlex.quote(str(job / 'script.sh'))}",
        "list-root": f"ls {shlex.quote(str(adapter.work_root))}",
        "append-log": f"echo 'FORGED BY ALICE' >> {out}",
        "kill-pid": f"kill -TERM $(cat {shlex.quote(str(job / 'pid'))})",
        "kill-group": f"kill -TERM -- -$(cat {shlex.quote(str(job / 'group'))})",
        "mark-done": f"echo 0 > {shlex.quote(str(job / 'exit_code'))}",
    }
    return "\n".join(
        f"if ({command}) >/dev/null 2>&1; then echo '{label}-{name}: done'; else echo '{label}-{name}: refused'; fi"
        for name, command in tries.items()
    )


@pytest.mark.django_db(transaction=True)
def test_users_of_a_per_user_backend_cannot_touch_each_others_jobs(
    user: User, bob: User, staff: User, per_user: Backend, run_to_end: Runner, accounts: dict[str, Any], gate: Path
) -> None:
    wait = f"for _ in $(seq 600); do [ -e {gate}/go ] && break; sleep 0.1; done"
    marker = "echo carol-secret-SCRIPT-LINE"
    carol_run = start(staff, per_user, f"{marker}; echo carol-start; {wait}; echo carol-end")
    bob_run = start(bob, per_user, f"echo bob-start; {wait}; echo bob-end")
    carol_task, bob_task = running_job(carol_run), running_job(bob_run)

    script = attacks("carol", per_user, staff, carol_task) + "\n" + attacks("bob", per_user, bob, bob_task)
    alice_done = run_to_end(start(user, per_user, script)).tasks.get()
    assert alice_done.state == Task.State.COMPLETED, alice_done.reason
    report = Path(alice_done.output_file).read_text()
    lines = report.split("\n")
    assert [line for line in lines if line.endswith(": done")] == []
    assert len([line for line in lines if line.endswith(": refused")]) == 14, report

    tick_due_backends(force=True)
    assert [carol_run.tasks.get().state, bob_run.tasks.get().state] == [Task.State.RUNNING] * 2
    (gate / "go").touch()
    carol_done = run_to_end(carol_run).tasks.get()
    bob_done = run_to_end(bob_run).tasks.get()
    assert (carol_done.state, carol_done.exit_code) == (Task.State.COMPLETED, 0), carol_done.reason
    assert (bob_done.state, bob_done.exit_code) == (Task.State.COMPLETED, 0), bob_done.reason
    carol_log = Path(carol_done.output_file).read_text()
    assert carol_log.split() == ["carol-secret-SCRIPT-LINE", "carol-start", "carol-end"]
    assert Path(bob_done.output_file).read_text().split() == ["bob-start", "bob-end"]

    # Each user's work root, job directory and run directory: 0700, their account's.
    for owner, task in ((staff, carol_done), (bob, bob_done), (user, alice_done)):
        adapter = adapter_of(per_user, owner)
        account = accounts[owner.username]
        assert adapter.run_as is not None and adapter.run_as.user == account.pw_name
        for directory in (adapter.work_root, adapter.jobs_dir / task.job_id, adapter.run_dir(str(task.run_id))):
            info = directory.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.pw_uid, 0o700), directory


@pytest.mark.django_db(transaction=True)
def test_tasks_run_as_their_owners_account(user: User, staff: User, per_user: Backend, run_to_end: Runner) -> None:
    for owner in (user, staff):  # staff's tasks are as confined as anyone's
        done = run_to_end(start(owner, per_user, "id -un; echo $HOME")).tasks.get()
        assert done.state == Task.State.COMPLETED, done.reason
        account = f"sh-{owner.username}-t"
        assert Path(done.output_file).read_text().split() == [account, f"/var/lib/{account}"]


@pytest.mark.django_db(transaction=True)
def test_explicit_os_users_win_over_the_template(user: User, per_user: Backend, run_to_end: Runner) -> None:
    ensure_account("sh-asmith-t")
    per_user.settings = {**per_user.settings, "os_users": {"alice": "sh-asmith-t"}}
    per_user.save()
    done = run_to_end(start(user, per_user, "id -un")).tasks.get()
    assert Path(done.output_file).read_text() == "sh-asmith-t\n"


@pytest.mark.django_db(transaction=True)
def test_a_user_without_an_account_is_refused_with_the_reason(user: User, per_user: Backend) -> None:
    erin = User.objects.create_user("erin", password="pw-erin-123")
    erin.groups.add(Group.objects.get(name=LOCAL_USERS))
    with pytest.raises(WorkflowError, match="erin's OS account 'sh-erin-t' does not exist on this host"):
        start(erin, per_user, "true")
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(erin)}"})
    body = {"backend": per_user.name, "workflow": {"tasks": [{"id": "t", "name": "t", "command": "true"}]}}
    response = api.post("/api/runs", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "'sh-erin-t' does not exist on this host" in response.json()["error"]
    assert not Run.objects.filter(owner=erin).exists()

    # An account removed from the mapping after the run was made: its tasks wait, saying why.
    run = start(user, per_user, "true")
    per_user.settings = {**per_user.settings, "os_users": {"alice": "no-such-account-t"}}
    per_user.save()
    tick_due_backends(force=True)
    task = Run.objects.get(pk=run.pk).tasks.get()
    assert task.state == Task.State.PENDING
    assert "alice's OS account 'no-such-account-t' does not exist on this host" in shown_reason(task)


@pytest.mark.django_db(transaction=True)
def test_the_portal_reads_a_users_log_as_that_user(
    client: Client, user: User, bob: User, per_user: Backend, run_to_end: Runner
) -> None:
    done = run_to_end(start(bob, per_user, "echo bobs-log-line"))
    client.force_login(bob)
    page = client.get(reverse("task_logs", args=[done.pk, "t", "output"]))
    assert page.status_code == 200 and "bobs-log-line" in page.content.decode()
    assert os.stat(done.tasks.get().output_file).st_uid != os.geteuid()


# -- network: none keeps tasks from the portal's services on loopback (finding 5) -----------

PROBE = """
for port in 6379 5432 {port}; do
    if timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then echo "$port: connected"
    else echo "$port: refused"; fi
done
"""


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_network_none_keeps_tasks_from_the_portals_redis_and_postgresql(
    user: User, per_user: Backend, run_to_end: Runner
) -> None:
    require("services", "Redis and PostgreSQL")
    with socket.create_server(("127.0.0.1", 0)) as portal:  # stands for the portal's own port
        probe = PROBE.format(port=portal.getsockname()[1])
        ports = ["6379", "5432", str(portal.getsockname()[1])]
        outputs = {}
        for network in ("host", "none"):
            per_user.settings = {**per_user.settings, "network": network}
            per_user.save()
            done = run_to_end(start(user, per_user, probe)).tasks.get()
            assert done.state == Task.State.COMPLETED, done.reason
            outputs[network] = Path(done.output_file).read_text().splitlines()
    assert outputs["host"] == [f"{port}: connected" for port in ports]
    assert outputs["none"] == [f"{port}: refused" for port in ports]


def test_network_defaults_to_none_with_run_as_and_needs_run_as() -> None:
    assert network_of({"run_as": "per_user"}) == "none" and network_of({"run_as": "x"}) == "none"
    assert network_of({}) == "host" and network_of({"run_as": "per_user", "network": "host"}) == "host"
    with pytest.raises(ValueError, match="network: none needs run_as"):
        validate_backend_settings("local", {"network": "none"})


def test_os_user_and_os_users_are_checked_on_import() -> None:
    with pytest.raises(ValueError, match=r"os_user: .*may only use \{username\}, not username.__class__"):
        validate_backend_settings("local", {"run_as": "per_user", "os_user": "{username.__class__}"})
    with pytest.raises(ValueError, match="not valid account names: alice: '../root'"):
        validate_backend_settings("local", {"run_as": "per_user", "os_users": {"alice": "../root"}})


@pytest.mark.django_db(transaction=True)
def test_a_per_user_cancel_stops_the_owners_job(user: User, per_user: Backend, run_to_end: Runner) -> None:
    run = start(user, per_user, "sleep 30")
    job_id = running_job(run).job_id
    cancel_run(run)
    done = run_to_end(run).tasks.get()
    assert done.state == Task.State.CANCELLED
    assert adapter_of(per_user, user).poll([job_id]).statuses[job_id].state == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_an_account_the_helper_refuses_makes_the_tasks_wait_saying_why(user: User, per_user: Backend) -> None:
    ensure_account("sh-outsider-t", allowed=False)
    per_user.settings = {**per_user.settings, "os_users": {"alice": "sh-outsider-t"}}
    per_user.save()
    run = start(user, per_user, "true")
    tick_due_backends(force=True)
    task = Run.objects.get(pk=run.pk).tasks.get()
    assert task.state == Task.State.PENDING
    assert "as sh-outsider-t: scripthut-runas: 'sh-outsider-t' is not in the group 'scripthut-tasks'" in shown_reason(
        task
    )


@pytest.mark.django_db
def test_without_an_owner_a_per_user_backend_runs_nothing(per_user: Backend) -> None:
    """Not as the portal's own user either: only an owner's adapter runs or reads anything."""
    adapter = get_adapter(per_user)
    assert isinstance(adapter, LocalAdapter)
    with pytest.raises(BackendUnavailable, match="runs tasks as each user's own OS account"):
        adapter.run_command("id -un")
    with pytest.raises(BackendUnavailable, match="runs tasks as each user's own OS account"):
        adapter.read_log(TaskLog(job_id="j", stream="output", path="/etc/hostname", working_dir="~", run_id="r"))
