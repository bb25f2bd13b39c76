"""The portal is not root: switching to users' accounts goes through one narrow step.

An unprivileged portal (here: a process that dropped root for good, ``sh-portal-t``)
starts a ``run_as: per_user`` task, follows it to its end and reads its log, only through
``sudo -n scripthut-runas`` allowed by one sudoers rule for the root-owned helper. The
helper refuses root, the portal's own account and accounts not in its allowed group, and
sudo refuses anything else (issue 18: "The portal itself is not root").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.local.runas import PACKAGED_HELPER
from tests.os_accounts import TASKS_GROUP, ensure_account

PORTAL, TASKS, OUTSIDER = "sh-portal-t", "sh-alice-t", "sh-outsider-t"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sudo_rule() -> Iterator[str]:
    """The helper installed root-owned, and the one sudoers rule that lets the portal run it."""
    if not shutil.which("sudo") or not shutil.which("visudo"):
        pytest.skip("needs sudo (tests/setup/services.sh installs it)")
    for name, allowed in ((PORTAL, False), (TASKS, True), (OUTSIDER, False)):
        ensure_account(name, allowed=allowed)
    directory = Path(f"/opt/scripthut-runas-test-{uuid.uuid4().hex[:8]}")
    directory.mkdir(mode=0o755)
    helper = directory / "scripthut-runas"
    shutil.copyfile(PACKAGED_HELPER, helper)
    helper.chmod(0o755)
    rule = Path(f"/etc/sudoers.d/scripthut-test-{directory.name[-8:]}")
    rule.write_text(f"{PORTAL} ALL=(root) NOPASSWD: {helper}\n")
    rule.chmod(0o440)
    try:
        subprocess.run(["visudo", "-cf", str(rule)], check=True, capture_output=True)
        yield str(helper)
    finally:
        rule.unlink()
        shutil.rmtree(directory)


def as_portal(*argv: str) -> subprocess.CompletedProcess[str]:
    command = ["setpriv", f"--reuid={PORTAL}", f"--regid={PORTAL}", "--init-groups", "--", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd="/")


def test_an_unprivileged_portal_runs_a_per_user_task_through_the_helper(sudo_rule: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.chown(data_dir, PORTAL, PORTAL)
    env = {**os.environ, "SCRIPTHUT_RUNAS_HELPER": sudo_rule, "PYTHONPATH": str(REPO)}
    script = str(REPO / "tests" / "unprivileged_portal.py")
    proc = subprocess.run(
        [sys.executable, script, PORTAL, TASKS, str(data_dir)], capture_output=True, text=True, timeout=90, env=env
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    portal_uid = int(as_portal("id", "-u").stdout)
    assert seen["euid"] == seen["uid"] == portal_uid != 0
    assert seen["error"] == "" and seen["state"] == "completed" and seen["exit_code"] == 0, seen
    assert seen["log"].split() == [TASKS, f"/var/lib/{TASKS}"]
    assert seen["found"] == {seen["job_id"]: seen["job_id"]}  # reconciling reads the account's jobs too
    cancelled = seen["cancelled"]
    assert (cancelled["state"], cancelled["log"]) == ("cancelled", "started\n"), cancelled
    work_root = Path(str(seen["work_root"]))
    assert work_root.stat().st_uid != portal_uid and oct(work_root.stat().st_mode & 0o777) == "0o700"


def test_the_privilege_step_refuses_everything_else(sudo_rule: str) -> None:
    def refusal(*argv: str) -> str:
        proc = as_portal(*argv)
        assert proc.returncode != 0, (argv, proc.stdout)
        return proc.stderr

    works = as_portal("sudo", "-n", sudo_rule, TASKS, "host", "id", "-un")
    assert (works.returncode, works.stdout) == (0, f"{TASKS}\n"), works.stderr
    # The helper: never root, never the portal's own account, only its allowed group.
    assert "is root" in refusal("sudo", "-n", sudo_rule, "root", "host", "id")
    assert "the portal's own account" in refusal("sudo", "-n", sudo_rule, PORTAL, "host", "id")
    assert f"not in the group '{TASKS_GROUP}'" in refusal("sudo", "-n", sudo_rule, OUTSIDER, "host", "id")
    assert "a name, not a uid" in refusal("sudo", "-n", sudo_rule, "0", "host", "id")
    assert "no such account" in refusal("sudo", "-n", sudo_rule, "no-such-account-t", "host", "id")
    assert "network must be none or host" in refusal("sudo", "-n", sudo_rule, TASKS, "bridge", "id")
    # sudo: nothing but the helper, as root only; and no switching without it.
    assert "password is required" in refusal("sudo", "-n", "-u", TASKS, "id")
    assert "password is required" in refusal("sudo", "-n", "/bin/sh", "-c", "id")
    assert "password is required" in refusal("sudo", "-n", PACKAGED_HELPER, TASKS, "host", "id")
    assert refusal("setpriv", f"--reuid={TASKS}", "id")
    # Run directly (not through sudo) the helper refuses too.
    assert "must run as root" in refusal(sudo_rule, TASKS, "host", "id")


def test_the_image_runs_as_scripthut_with_one_sudoers_rule_for_the_helper() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER scripthut"] and lines.index(users[0]) > max(
        i for i, line in enumerate(lines) if line.startswith("RUN ")
    ), "the last RUN and everything after it (CMD) as scripthut"
    text = "\n".join(lines)
    assert "echo 'scripthut ALL=(root) NOPASSWD: /usr/local/libexec/scripthut-runas' > /etc/sudoers.d/" in text
    assert "install -o root -g root -m 0755 backends/local/scripthut-runas /usr/local/libexec/scripthut-runas" in text
    assert text.count("NOPASSWD") == 1
