"""The real test cluster (tests/setup/cluster.sh) works: Slurm with and without accounting, and sshd."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

if TYPE_CHECKING:
    from tests.cluster import Cluster

pytest_plugins = ["tests.cluster"]  # the session-scoped `cluster` fixture

pytestmark = pytest.mark.cluster

DISABLED = "accounting storage is disabled"


def wait_for(check: Callable[[], str | None], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    last: str | None = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout}s")


@contextmanager
def ssh(cluster: Cluster, known_hosts: str | None = None) -> Iterator[paramiko.SSHClient]:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts or cluster.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            cluster.host,
            port=cluster.port,
            username=cluster.user,
            key_filename=cluster.key_path,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        yield client
    finally:
        client.close()


def run(client: paramiko.SSHClient, cmd: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(cmd, timeout=60)
    rc = stdout.channel.recv_exit_status()
    return rc, stdout.read().decode(), stderr.read().decode()


def test_sbatch_as_user_completes_and_sacct_records_it(cluster: Cluster) -> None:
    out = cluster.run_as_user("cd /tmp && sbatch --parsable --comment=setup-check --wrap 'echo hi'")
    job_id = out.strip().split(";")[0]
    assert job_id.isdigit(), out

    fields = "JobID,State,ExitCode,Account,Comment,Partition,JobName"

    def finished() -> str | None:
        rows = cluster.run_as_user(f"sacct -j {job_id} -X --noheader --parsable2 --format={fields}").splitlines()
        if not rows or rows[0].split("|")[1] in ("PENDING", "RUNNING"):
            return None
        # Slurm 22.05 quirk: a job that starts and ends within a second can first show up in sacct
        # already COMPLETED but with JobName "allocation", no Partition and QOS "Unknown", until
        # slurmdbd has also stored its start record (about a second later).
        return None if rows[0].endswith("|allocation") else rows[0]

    row = wait_for(finished, 60, f"job {job_id} finished in sacct")
    assert row == f"{job_id}|COMPLETED|0:0|{cluster.account}|setup-check|{cluster.partition}|wrap"


def test_ssh_with_known_hosts_and_key_runs_squeue(cluster: Cluster) -> None:
    with ssh(cluster) as client:
        rc, out, err = run(client, "whoami && squeue -h -o '%i %u' && sinfo -h -o %P")
    assert rc == 0, err
    assert out.splitlines()[0] == cluster.user
    assert f"{cluster.partition}*" in out.split()


def test_unknown_host_key_is_rejected(cluster: Cluster, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        with ssh(cluster, known_hosts=str(empty)):
            pass


def test_stop_sshd_refuses_connections_and_start_restores(cluster: Cluster) -> None:
    with ssh(cluster) as open_session:
        try:
            cluster.stop_sshd()
            with pytest.raises(NoValidConnectionsError) as refused:
                with ssh(cluster):
                    pass
            assert all(isinstance(e, ConnectionRefusedError) for e in refused.value.errors.values())
            # An open session goes away with the server.
            transport = open_session.get_transport()
            assert transport is not None
            wait_for(lambda: None if transport.is_active() else "closed", 10, "open session dropped")
        finally:
            cluster.start_sshd()
    with ssh(cluster) as client:
        assert run(client, "true")[0] == 0


def test_accounting_off_and_back_on(cluster: Cluster) -> None:
    try:
        cluster.accounting(False)
        assert DISABLED in cluster.run_as_user("sacct -X 2>&1", check=False)
        # Jobs still run; they are seen through scontrol only.
        job_id = cluster.run_as_user("cd /tmp && sbatch --parsable --wrap true").strip().split(";")[0]
        wait_for(
            lambda: "done" if "JobState=COMPLETED" in cluster.run_as_user(f"scontrol show job {job_id}") else None,
            60,
            f"job {job_id} COMPLETED in scontrol",
        )
    finally:
        cluster.accounting(True)
    out = cluster.run_as_user("sacct -X --noheader --parsable2 --format=JobID,State -S now-1days 2>&1")
    assert DISABLED not in out
    assert "COMPLETED" in out
