"""The pusher's thread (runs.live.coalesce) at process exit: what waits is pushed, and a
push that hangs does not hold the exit up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROCESS = """
import sys, time
import django
from asgiref.sync import async_to_sync

django.setup()
from runs.engine.events import RunChange
from runs.live.coalesce import Coalescer

async def write(run_id):
    with open(sys.argv[1], "a") as out:
        out.write(run_id + "\\n")

def publish(change):
    if change.run_id == "hangs":
        time.sleep(600)
    if change.run_id.startswith("async"):
        async_to_sync(write)(change.run_id)  # as the real push sends: through the channel layer's async API
    else:
        with open(sys.argv[1], "a") as out:
            out.write(change.run_id + "\\n")

pusher = Coalescer(publish, 600.0)  # a window nobody waits for: only the exit sends
for run_id in sys.argv[2:]:
    pusher.add(RunChange(run_id))
"""


def _exit_with_waiting(tmp_path: Path, *run_ids: str) -> list[str]:
    """Run ids pushed by a process that exits with these changes waiting (within 60 s, or it fails)."""
    out = tmp_path / "pushed"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", PROCESS, str(out), *run_ids], env=env, cwd=root, timeout=60, check=True)
    return sorted(out.read_text().split()) if out.exists() else []


def test_changes_waiting_at_exit_are_pushed(tmp_path: Path) -> None:
    assert _exit_with_waiting(tmp_path, "r1", "r2") == ["r1", "r2"]


def test_changes_waiting_at_exit_are_pushed_through_async_code(tmp_path: Path) -> None:
    """The real push sends with async_to_sync: the exit flush must run before the interpreter
    stops taking new work for its thread pools (a plain atexit hook is too late)."""
    assert _exit_with_waiting(tmp_path, "async1", "async2") == ["async1", "async2"]


def test_a_push_that_hangs_does_not_hold_the_exit(tmp_path: Path) -> None:
    assert _exit_with_waiting(tmp_path, "hangs") == []  # exited (after EXIT_SECONDS), not 600 s later
