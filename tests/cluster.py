"""A real single-node Slurm cluster and a real OpenSSH server on 127.0.0.1, for tests.

``tests/setup/cluster.sh`` installs and starts them (munge, slurmdbd on the local MariaDB,
slurmctld, slurmd, an sshd on 127.0.0.1:2222 with a test user ``hut``, and a second one,
``hut2``, with its own key: ``user2``/``key_path2``); this module gives
tests a session-scoped ``cluster`` fixture on top of it. conftest.py does not load it: a test
module that wants it loads this module as a plugin (import ``Cluster`` for annotations only, so
that pytest imports the module itself, with assertion rewriting, and ruff sees no shadowed
import)::

    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        from tests.cluster import Cluster

    pytest_plugins = ["tests.cluster"]

    def test_submit(cluster: Cluster) -> None:
        job = cluster.run_as_user("sbatch --parsable --wrap 'echo hi'")

(``from tests.cluster import cluster  # noqa: F401, F811`` also works, but ruff then flags every
test parameter named ``cluster``.)

The fixture starts the cluster once per session, or not at all if ``cluster.sh status`` says
everything is already up; the daemons stay up after the session for the next one. If the
cluster cannot start (not root, no package registry, ...) the tests that use it are SKIPPED
with the script's output as the reason, except when ``CI`` is set: there they FAIL, so that
a broken setup never passes as skipped tests.

Tests that stop a component should bring it back in a ``finally`` or use the context
managers (``with cluster.sshd_stopped(): ...``): the fixture is shared by the whole session.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent / "setup" / "cluster.sh"
DEFAULT_DIR = "/var/tmp/scripthut-cluster"
START_TIMEOUT = 600  # seconds; a fresh start with apt takes well under two minutes
COMMAND_TIMEOUT = 180


class ClusterError(RuntimeError):
    """cluster.sh or a command run as the test user failed; the message has its output."""


def _cluster_dir() -> str:
    return os.environ.get("SCRIPTHUT_CLUSTER_DIR") or DEFAULT_DIR


def _script(*args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCRIPTHUT_CLUSTER_DIR": _cluster_dir()}
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"cluster.sh {' '.join(args)} timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise ClusterError(f"cluster.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def read_env(path: Path) -> dict[str, str]:
    """Parse cluster.env's ``KEY=value`` lines (values may be quoted)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value)
        values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class Cluster:
    """How to reach the test cluster, and switches that break and repair it."""

    host: str
    port: int
    user: str
    key_path: str
    known_hosts: str
    partition: str
    account: str
    dir: str
    user2: str  # a second cluster account (private homes: neither reads the other's files)
    key_path2: str

    @classmethod
    def from_env_file(cls, path: Path) -> Cluster:
        env = read_env(path)
        return cls(
            host=env["SSH_HOST"],
            port=int(env["SSH_PORT"]),
            user=env["SSH_USER"],
            key_path=env["SSH_KEY"],
            known_hosts=env["SSH_KNOWN_HOSTS"],
            partition=env["SLURM_PARTITION"],
            account=env["SLURM_ACCOUNT"],
            dir=env["CLUSTER_DIR"],
            user2=env["SSH_USER2"],
            key_path2=env["SSH_KEY2"],
        )

    # --- switches: each returns once the component is really down / up ------------------------
    def stop_sshd(self) -> None:
        """Stop the test sshd (open SSH sessions are dropped too); connecting is then refused."""
        _script("stop-sshd")

    def start_sshd(self) -> None:
        _script("start-sshd")

    def stop_slurmctld(self) -> None:
        """Stop the controller: Slurm commands then fail after about 9 s (MessageTimeout)."""
        _script("stop-slurmctld")

    def start_slurmctld(self) -> None:
        """Start the controller again (its saved state, jobs included, is kept)."""
        _script("start-slurmctld")

    def accounting(self, on: bool) -> None:
        """Switch slurmdbd accounting on or off (restarts slurmctld and slurmd).

        Off: ``sacct`` prints "Slurm accounting storage is disabled" and finished jobs are
        visible only through ``scontrol show job`` for MinJobAge (300 s).
        """
        _script("accounting", "on" if on else "off")

    def limits(self, on: bool) -> None:
        """Enforce sacctmgr limits (``AccountingStorageEnforce=associations,limits,qos``) or
        not; restarts slurmctld (its jobs are kept). ``start`` turns enforcement off."""
        _script("limits", "on" if on else "off")

    def status(self) -> str:
        return _script("status", check=False).stdout

    def ensure_up(self) -> None:
        """Bring everything back as ``start`` leaves it (quick when all is up)."""
        _script("start", timeout=START_TIMEOUT)

    @contextmanager
    def sshd_stopped(self) -> Iterator[None]:
        self.stop_sshd()
        try:
            yield
        finally:
            self.start_sshd()

    @contextmanager
    def slurmctld_stopped(self) -> Iterator[None]:
        self.stop_slurmctld()
        try:
            yield
        finally:
            self.start_slurmctld()

    @contextmanager
    def accounting_off(self) -> Iterator[None]:
        self.accounting(False)
        try:
            yield
        finally:
            self.accounting(True)

    @contextmanager
    def max_submit_jobs(self, user: str, limit: int) -> Iterator[None]:
        """``user`` may have at most ``limit`` jobs queued (array elements count one each),
        enforced; everything as it was afterwards (other tests share the cluster: give the
        limit to ``user2``, whom only a few tests use)."""
        self.limits(True)
        try:
            subprocess.run(
                ["sacctmgr", "-i", "modify", "user", user, "set", f"MaxSubmitJobs={limit}"],
                check=True,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
            )
            yield
        finally:
            subprocess.run(
                ["sacctmgr", "-i", "modify", "user", user, "set", "MaxSubmitJobs=-1"],
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
            )
            self.limits(False)

    # --- use -------------------------------------------------------------------------------------
    def ssh_settings(self, second_user: bool = False) -> dict[str, Any]:
        """The ``ssh:`` block of a backend config that reaches this cluster (as ``user2``
        if ``second_user``)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user2 if second_user else self.user,
            "key_path": self.key_path2 if second_user else self.key_path,
            "known_hosts": self.known_hosts,
        }

    def run_as_user(self, cmd: str, *, check: bool = True, timeout: float = 60, user: str | None = None) -> str:
        """Run a shell command locally as the test user (or ``user``, e.g. ``user2``; login
        shell) and return its stdout.

        E.g. ``run_as_user("sbatch --parsable --wrap 'sleep 30'")`` submits a job that the
        portal did not start. Raises ClusterError with the output if it exits non-zero and
        ``check`` is true.
        """
        user = user or self.user
        proc = subprocess.run(
            ["runuser", "-l", user, "-c", cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"as {user}: {cmd!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout


def start_cluster() -> Cluster:
    """Start the cluster unless ``cluster.sh status`` says it is all up; raise ClusterError if it cannot."""
    env_file = Path(_cluster_dir()) / "cluster.env"
    try:
        up = _script("status", check=False, timeout=60).returncode == 0
    except ClusterError:
        up = False
    if not (up and env_file.exists()):
        _script("start", timeout=START_TIMEOUT)
    return Cluster.from_env_file(env_file)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The running test cluster (see the module docstring); skips, or fails under CI, if it cannot start."""
    try:
        return start_cluster()
    except (ClusterError, OSError, KeyError, ValueError) as exc:
        reason = f"test cluster unavailable: {exc}"
    if len(reason) > 4000:
        reason = reason[:1000] + "\n...\n" + reason[-3000:]
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
