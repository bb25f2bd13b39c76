"""The EC2 user data (backends/ec2/userdata.sh), rendered for an awkward task, checked by
``bash -n`` and then run on this machine with ``docker`` and ``shutdown`` replaced by the
stubs in tests/ec2stubs (the docker stub runs the mounted task script here)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from backends.base import JobSpec
from backends.ec2.userdata import render_user_data
from backends.scripts import script_body

STUBS = Path(__file__).with_name("ec2stubs")
AWKWARD = {
    "QUOTES": "it's \"double\" and 'single'",
    "SUBST": "$(touch /tmp/scripthut-pwned) `id` ${HOME}",
    "LINES": "line one\nline two\n\nlast; rm -rf /",
    "SCRIPTHUT_TASK_SCRIPT": "the heredoc's delimiter as a value",
}


def job(command: str, time_limit: str = "5:00") -> JobSpec:
    return JobSpec(tag="sh-r-1-abc", run_id="r1", task_id="odd 'task' $(x)", name="n", command=command,
                   env=AWKWARD, time_limit=time_limit)  # fmt: skip


def render(spec: JobSpec, image: str = "ghcr.io/org/image:latest") -> str:
    return render_user_data(image=image, script="#!/bin/bash\n" + script_body(spec), time_limit=spec.time_limit,
                            idle_terminate_seconds=1800)  # fmt: skip


def run_as_instance(user_data: str, root: Path) -> subprocess.CompletedProcess[str]:
    path = root / "user-data.sh"
    path.write_text(user_data)
    env = {"PATH": f"{STUBS}:/usr/bin:/bin", "SCRIPTHUT_ROOT": str(root), "HOME": str(root)}
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=120, cwd=root)


def shutdown_args(root: Path, timeout: float = 30) -> str:
    """The safety timer's arguments, once the backgrounded ``shutdown`` stub has written them
    (it may still be running when the user data script has ended)."""
    path = root / "shutdown-args"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"shutdown was not called within {timeout}s"
        time.sleep(0.05)
    return path.read_text()


def test_awkward_values_pass_through_unchanged(tmp_path):
    command = (
        'for name in QUOTES SUBST LINES SCRIPTHUT_TASK_SCRIPT; do printf "%s=[%s]\\n" "$name" "${!name}"; done; exit 7'
    )
    user_data = render(job(command), image="ghcr.io/o/i:1 ; echo injected")
    assert subprocess.run(["bash", "-n"], input=user_data, text=True, capture_output=True).returncode == 0
    Path("/tmp/scripthut-pwned").unlink(missing_ok=True)
    done = run_as_instance(user_data, tmp_path)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "var/log/scripthut/task.log").read_text()
    for name, value in AWKWARD.items():
        assert f"{name}=[{value}]" in log
    assert "\ninjected\n" not in log  # the image name is one word to docker, never shell
    assert not Path("/tmp/scripthut-pwned").exists()
    assert (tmp_path / "var/run/scripthut/done").read_text() == "7\n"
    # Safety timer: 5 minutes + 1800 s.
    assert shutdown_args(tmp_path).startswith("-h +35 ")


def test_time_limit_kills_the_task_and_says_so(tmp_path):
    done = run_as_instance(render(job("echo started; sleep 20; echo never", time_limit="0:02")), tmp_path)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "var/log/scripthut/task.log").read_text()
    assert "started" in log and "never" not in log and "time limit of 2s reached" in log
    assert (tmp_path / "var/run/scripthut/done").read_text() == "124\n"
    assert shutdown_args(tmp_path).startswith("-h +31 ")


def test_image_that_cannot_be_pulled_writes_125(tmp_path):
    run_as_instance(render(job("echo never"), image="missing/image"), tmp_path)
    assert "cannot pull missing/image" in (tmp_path / "var/log/scripthut/task.log").read_text()
    assert (tmp_path / "var/run/scripthut/done").read_text() == "125\n"


def test_too_large_a_script_is_refused():
    with pytest.raises(ValueError, match="too large for EC2 user data"):
        render(job("echo " + "x" * 20000))
