"""Slurm: task end -> shown by the API, and the slurmctld RPCs the portal causes, over a
fixed window of a steady run, with end markers read every few seconds and without (today:
the scheduler's poll only). On the real one-node cluster (`bash tests/setup/cluster.sh start`).

    python bench/slurm_ends_bench.py [--n 400] [--slots 10] [--poll 60] [--window 180]
                                     [--markers 5,0] [--user 1|2]

A run of `--n` tasks of 3 to 15 s with `--slots` of them at a time keeps jobs ending and
starting. For `--window` seconds from the run's start it counts what `sdiag` counts: the
job-info and submit RPCs by message type (cluster-wide) and the RPCs of the portal's cluster
user (its row under "Remote Procedure Call statistics by user": other users' load left out;
`--user 2` runs as the second test user, whom fewer other tests use), per minute, as
differences (no `sdiag --reset`: that needs root or SlurmUser, and would disturb anyone else
reading the counters). The run is then cancelled. Last, the end markers of jobs that are
running are read 50 times on their own: the read should cost slurmctld nothing.

Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from collections import Counter
from typing import Any

from slurm_bench import Ticker, cluster_env, sdiag_counts, setup_backend, wait_queue_empty  # sets up Django

from backends.base import CommandResult
from backends.registry import get_adapter
from backends.ssh.markers import READ_MARKERS
from backends.ssh.transport import SshTransport
from runs.actions import cancel_run, create_run
from runs.models import Run, Task

JOB_INFO = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
SUBMIT = ("REQUEST_SUBMIT_BATCH_JOB",)


def user_rpcs(user: str) -> int:
    """RPCs ``user`` sent slurmctld since its counters were last reset (sdiag's by-user rows)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    by_user = out.partition("Remote Procedure Call statistics by user")[2].partition("Pending RPC")[0]
    found = re.search(rf"^\s*{re.escape(user)}\s*\(\s*\d+\)\s*count:(\d+)", by_user, re.M)
    return int(found.group(1)) if found else 0


class Counters:
    """sdiag's counters at one moment, and the per-minute rates since."""

    def __init__(self, user: str):
        self.user = user
        self.types, self.mine, self.at = sdiag_counts(), user_rpcs(user), time.perf_counter()

    def since(self, per_minute: bool = True) -> str:
        """What was counted since, per minute (or in all)."""
        now = Counters(self.user)
        minutes = (now.at - self.at) / 60
        scale = 1 / minutes if per_minute else 1
        unit = "/min" if per_minute else ""

        def count(keys: tuple[str, ...]) -> float:
            return sum(now.types.get(k, 0) - self.types.get(k, 0) for k in keys) * scale

        by_type = ", ".join(f"{k.removeprefix('REQUEST_').lower()} {count((k,)):.1f}" for k in JOB_INFO + SUBMIT)
        return (
            f"job-info RPCs {count(JOB_INFO):.1f}{unit} ({by_type}); all RPCs of user {self.user}:"
            f" {(now.mine - self.mine) * scale:.1f}{unit} over {minutes * 60:.0f} s"
        )


def count_commands(transport: SshTransport) -> Counter[str]:
    """Count the commands the adapter runs by their first word (scripts on stdin: by what
    they do), to tell which of the user's RPCs are the portal's."""
    commands: Counter[str] = Counter()
    run, run_script = transport.run, transport.run_script

    def counted_run(command: str, **options: Any) -> CommandResult:
        words = command.split()
        commands[" ".join(words[:3] if words[0] == "scontrol" else words[:1])] += 1
        return run(command, **options)

    def counted_script(script: str, **options: Any) -> CommandResult:
        commands["marker read" if script.startswith(READ_MARKERS) else "script (submit batch, ...)"] += 1
        return run_script(script, **options)

    transport.run, transport.run_script = counted_run, counted_script  # type: ignore[method-assign]
    return commands


def bench(n: int, slots: int, poll: int, window: float, every: float, second_user: bool) -> None:
    user = cluster_env()["SSH_USER2" if second_user else "SSH_USER"]
    backend, owner = setup_backend(poll=poll, markers_every=every, second_user=second_user, name="bench-ends")
    adapter = get_adapter(backend)
    transport = adapter.transport  # type: ignore[attr-defined]
    wait_queue_empty(transport)
    commands = count_commands(transport)
    tasks = [{"id": f"e.{i:04d}", "name": "e", "command": f"sleep {3 + i % 13}"} for i in range(n)]
    run = create_run(owner=owner, backend=backend, payload=tasks, workflow_name=f"ends-{every}", max_concurrent=slots)
    seen: dict[int, float] = {}
    ticker = Ticker(interval=0.2)
    commands.clear()
    counters = Counters(user)
    end = time.perf_counter() + window
    while time.perf_counter() < end:
        ticker.tick()  # the embedded ticker's cadence: due backends, and those a job's end woke
        done = Task.objects.filter(run=run, state="completed").exclude(pk__in=list(seen))
        seen |= dict.fromkeys(done.values_list("pk", flat=True), time.time())
    rates = counters.since()
    ended = dict(Task.objects.filter(pk__in=list(seen)).values_list("pk", "finished_at"))
    lags = sorted(seen[pk] - at.timestamp() for pk, at in ended.items() if at)
    p95 = lags[int(0.95 * (len(lags) - 1))] if lags else float("nan")
    print(
        f"end markers every {every:g} s, poll_interval {poll} s, {slots} slots: {len(lags)} tasks ended in"
        f" {window:.0f} s; end -> shown p50 {statistics.median(lags) if lags else float('nan'):.1f} s"
        f" p95 {p95:.1f} s max {lags[-1] if lags else float('nan'):.1f} s; {rates}"
    )
    print(f"  the portal's commands on the login node in the window: {dict(commands)}")
    if every:
        running = {t.job_id: (t.run_id, t.submit_tag) for t in Task.objects.filter(run=run, state="running")}
        counters = Counters(user)
        for _ in range(50):
            adapter.read_ends(running)
        print(f"  50 marker reads of {len(running)} running jobs on their own: {counters.since(per_minute=False)}")
    cancel_run(run)
    while not Run.objects.get(pk=run.pk).is_finished:
        ticker.tick()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--poll", type=int, default=60)
    parser.add_argument("--window", type=float, default=180)
    parser.add_argument("--markers", default="5,0", help="end_markers_every values to compare (0: none)")
    parser.add_argument("--user", type=int, choices=[1, 2], default=1, help="the first or second test user")
    args = parser.parse_args()
    for every in (float(m) for m in args.markers.split(",")):
        bench(args.n, args.slots, args.poll, args.window, every, args.user == 2)


if __name__ == "__main__":
    main()
