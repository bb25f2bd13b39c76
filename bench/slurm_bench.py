"""Slurm benchmarks on the real one-node cluster (start it with `bash tests/setup/cluster.sh start`).

    python bench/slurm_bench.py parse            # 50,000 lines of squeue and sacct output
    python bench/slurm_bench.py submit [--n 500] # 500 one-second tasks vs 500 plain sbatch calls
    python bench/slurm_bench.py chain [--poll 60] [--links 20] [--native on,off] [--markers-every 1,5] [--watch on,off]
    python bench/slurm_bench.py sweep [--n 10000] [--max-submit 1000]
                                                 # `sleep 1` tasks under an enforced MaxSubmitJobs (as the
                                                 # second test user; run as root: turns limits on, then off)

Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from backends.config import validate_backend_settings  # noqa: E402
from backends.models import Backend  # noqa: E402
from backends.registry import get_adapter  # noqa: E402
from backends.signals import job_ended  # noqa: E402
from backends.slurm.parsing import parse_sacct, parse_squeue  # noqa: E402
from backends.ssh.transport import SshTransport  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from runs.models import Run, Task  # noqa: E402

CLUSTER_ENV = Path(os.environ.get("SCRIPTHUT_CLUSTER_DIR", "/var/tmp/scripthut-cluster")) / "cluster.env"


def cluster_env() -> dict[str, str]:
    values = dict(
        line.split("=", 1) for line in CLUSTER_ENV.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    return {k: v.strip().strip("'\"") for k, v in values.items()}


def cluster_ssh(second_user: bool = False) -> dict[str, object]:
    values = cluster_env()
    return {
        "host": values["SSH_HOST"],
        "port": int(values["SSH_PORT"]),
        "user": values["SSH_USER2" if second_user else "SSH_USER"],
        "key_path": values["SSH_KEY2" if second_user else "SSH_KEY"],
        "known_hosts": values["SSH_KNOWN_HOSTS"],
    }


def sdiag_counts() -> dict[str, int]:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(REQUEST_\w+)\s*\(\s*\d+\)\s*count:(\d+)", out, re.M)
    }


def rpc_delta(before: dict[str, int], after: dict[str, int]) -> str:
    keys = ("REQUEST_SUBMIT_BATCH_JOB", "REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
    return ", ".join(f"{k.removeprefix('REQUEST_').lower()}={after.get(k, 0) - before.get(k, 0)}" for k in keys)


def bench_parse() -> None:
    squeue = "\n".join(
        f"{i}|user{i % 50}|RUNNING|None|normal|1|node{i % 9}|2026-11-25T12:00:00|2026-11-25T12:00:05|job{i}@sh-x-{i}"
        for i in range(50_000)
    )
    rows = []
    for i in range(25_000):
        rows.append(
            f"{i}|COMPLETED|0:0|00:00:10|00:00:05|2||4G|2026-11-25T12:06:00|2026-11-25T12:06:30|"
            f"2026-11-25T12:06:40|n1|None|job{i}@sh-x-{i}"
        )
        rows.append(
            f"{i}.batch|COMPLETED|0:0|00:00:10|00:00:05|2|2048000K||2026-11-25T12:06:30|2026-11-25T12:06:30|"
            f"2026-11-25T12:06:40|n1||batch"
        )
    sacct = "\n".join(rows)
    for name, parse, text in (("squeue", parse_squeue, squeue), ("sacct", parse_sacct, sacct)):
        best = min(_timed(parse, text) for _ in range(5))
        print(f"parse {name}: 50,000 lines in {best:.3f} s")


def _timed(fn, arg) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def setup_backend(
    native: bool = True,
    poll: int = 1,
    max_concurrent: int = 1000,
    markers_every: float = 5,
    second_user: bool = False,
    name: str = "bench-slurm",
) -> tuple[Backend, User]:
    call_command("migrate", verbosity=0)
    owner, _ = User.objects.get_or_create(username="bench")
    settings = validate_backend_settings(
        "slurm", {"ssh": cluster_ssh(second_user), "native_dependencies": native, "end_markers_every": markers_every}
    )
    backend, _ = Backend.objects.update_or_create(
        name=name,
        defaults={"kind": "slurm", "settings": settings, "max_concurrent": max_concurrent, "poll_interval": poll},
    )
    return backend, owner


class Ticker:
    """Ticks as the embedded ticker does (``runs/workers/ticker.py``): the backends that are
    due, every ``interval`` seconds, and at once those a ``job_ended`` names."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.woken: set[int] = set()
        self.wake = threading.Event()
        job_ended.connect(self._on_end, dispatch_uid="slurm-bench-ticker")

    def _on_end(self, sender: object, backend_id: int, **kwargs: object) -> None:
        self.woken.add(backend_id)
        self.wake.set()

    def tick(self) -> None:
        self.wake.clear()
        woken, self.woken = self.woken, set()
        tick_due_backends(also=woken)
        self.wake.wait(self.interval)


def wait_queue_empty(transport: SshTransport) -> None:
    while transport.run("squeue --noheader --me --format=%i").stdout.strip():
        time.sleep(1)


def bench_submit(n: int) -> None:
    backend, owner = setup_backend()
    adapter = get_adapter(backend)
    transport = adapter.transport  # type: ignore[attr-defined]
    transport.run("true")  # connect outside the measurement
    wait_queue_empty(transport)

    # Floor: n plain sbatch calls in one SSH session.
    before, trips = sdiag_counts(), transport.round_trips
    start = time.perf_counter()
    transport.run_script(f"for i in $(seq {n}); do sbatch --parsable --wrap='sleep 1' >/dev/null; done")
    floor = time.perf_counter() - start
    print(
        f"floor: {n} plain sbatch in one SSH session: {floor:.2f} s, {transport.round_trips - trips} round trips, "
        f"slurmctld RPCs {rpc_delta(before, sdiag_counts())}"
    )
    wait_queue_empty(transport)

    tasks = [{"id": f"t.{i:04d}", "name": f"T {i}", "command": "sleep 1"} for i in range(n)]
    run = create_run(owner=owner, backend=backend, payload=tasks, workflow_name="bench-submit", max_concurrent=n)
    before, trips = sdiag_counts(), transport.round_trips
    start = time.perf_counter()
    while Task.objects.filter(run=run, state=Task.State.PENDING).exists():
        tick_due_backends(force=True)
    took = time.perf_counter() - start
    used = transport.round_trips - trips
    print(
        f"scripthut: {n} tasks submitted in {took:.2f} s ({took / floor:.2f}x the floor), {used} SSH round trips "
        f"({used / n:.3f} per task), slurmctld RPCs {rpc_delta(before, sdiag_counts())}"
    )
    while not Run.objects.get(pk=run.pk).is_finished:
        tick_due_backends(force=True)
        time.sleep(1)
    print(f"run {Run.objects.get(pk=run.pk).status}")


def bench_chain(links: int, poll: int, natives: list[bool], markers: list[float], watches: list[bool]) -> None:
    """A chain of ``links`` one-second tasks through the portal, beside the same chain
    straight to Slurm with afterok (the floor), measured the same way on the same cluster."""
    backend, owner = setup_backend(poll=poll)
    transport = get_adapter(backend).transport  # type: ignore[attr-defined]
    wait_queue_empty(transport)
    # Reference: the chain straight to Slurm with afterok, in one SSH session.
    script = "prev=$(sbatch --parsable --wrap='sleep 1')\n" + "\n".join(
        ["prev=$(sbatch --parsable --dependency=afterok:$prev --wrap='sleep 1')"] * (links - 1)
    )
    start = time.perf_counter()
    transport.run_script(script)
    wait_queue_empty(transport)
    straight = time.perf_counter() - start
    print(f"straight to Slurm (afterok): {links} links in {straight:.1f} s")
    for native, every, watch in itertools.product(natives, markers, watches):
        if not every and watch and len(watches) > 1:
            continue  # no markers: nothing to watch
        backend.settings = backend.settings | {
            "native_dependencies": native,
            "end_markers_every": every,
            "watch_end_markers": watch,
        }
        backend.save()
        chain = [{"id": "link.00", "name": "l0", "command": "sleep 1"}] + [
            {"id": f"link.{i:02d}", "name": f"l{i}", "command": "sleep 1", "deps": [f"link.{i - 1:02d}"]}
            for i in range(1, links)
        ]
        run = create_run(owner=owner, backend=backend, payload=chain, workflow_name="chain", max_concurrent=links)
        started_at = timezone.now()
        start = time.perf_counter()
        ticker = Ticker()
        while not Run.objects.get(pk=run.pk).is_finished:
            ticker.tick()  # the real cadence: due backends (and those a job's end woke)
        seen = time.perf_counter() - start
        last = Task.objects.filter(run=run).order_by("-finished_at").first()
        on_cluster = (last.finished_at - started_at).total_seconds() if last and last.finished_at else float("nan")
        status = Run.objects.get(pk=run.pk).status
        print(
            f"scripthut native={'on' if native else 'off'} end_markers_every={every:g} watch={'on' if watch else 'off'}"
            f" poll_interval={poll}: run {status}; last link ended {on_cluster:.1f} s after creation"
            f" ({on_cluster / straight:.2f}x straight), seen completed after {seen:.1f} s"
        )
        print(f"  per link, median: {link_times(run)}")


def link_times(run: Run) -> str:
    """Where a link's time goes: the previous link's end (its job's own clock) -> this one
    submitted (the portal's stamp) -> started (its job's clock) -> ended."""
    links = list(Task.objects.filter(run=run).order_by("task_id").values("submitted_at", "started_at", "finished_at"))
    gaps: dict[str, list[float]] = {"end -> next submit": [], "submit -> start": [], "run": []}
    for before, link in itertools.pairwise(links):
        if before["finished_at"] and link["submitted_at"] and link["started_at"] and link["finished_at"]:
            gaps["end -> next submit"].append((link["submitted_at"] - before["finished_at"]).total_seconds())
            gaps["submit -> start"].append((link["started_at"] - link["submitted_at"]).total_seconds())
            gaps["run"].append((link["finished_at"] - link["started_at"]).total_seconds())
    return ", ".join(f"{name} {statistics.median(values):.2f} s" for name, values in gaps.items() if values)


def bench_sweep(n: int, max_submit: int) -> None:
    """``n`` one-second tasks with MaxSubmitJobs=``max_submit`` enforced: all complete, none
    twice, and the user's queue never holds more than the limit."""
    user = cluster_env()["SSH_USER2"]  # a limit on the second test user leaves the others' jobs alone
    backend, owner = setup_backend(max_concurrent=n, second_user=True, name="bench-sweep")
    transport = get_adapter(backend).transport  # type: ignore[attr-defined]
    wait_queue_empty(transport)
    cluster_sh = ["bash", str(Path(__file__).resolve().parent.parent / "tests" / "setup" / "cluster.sh")]
    subprocess.run([*cluster_sh, "limits", "on"], check=True, capture_output=True)
    try:
        sacctmgr = ["sacctmgr", "-i", "modify", "user", user, "set"]
        subprocess.run([*sacctmgr, f"MaxSubmitJobs={max_submit}"], check=True, capture_output=True)
        tasks = [
            {"id": f"s.{i:05d}", "name": "sweep", "command": "sleep 1", "memory": "100M", "time_limit": "5:00"}
            for i in range(n)
        ]
        run = create_run(owner=owner, backend=backend, payload=tasks, workflow_name="bench-sweep", max_concurrent=n)
        before, most, ticks = sdiag_counts(), 0, 0
        start = time.perf_counter()
        while not Run.objects.get(pk=run.pk).is_finished:
            tick_due_backends(force=True)
            ticks += 1
            queued = subprocess.run(["squeue", "-h", "-r", "-u", user, "-o", "%i"], capture_output=True, text=True)
            most = max(most, len(queued.stdout.split()))
            time.sleep(1)
        took = time.perf_counter() - start
        rpcs = rpc_delta(before, sdiag_counts())
    finally:
        subprocess.run([*sacctmgr, "MaxSubmitJobs=-1"], capture_output=True)
        subprocess.run([*cluster_sh, "limits", "off"], capture_output=True)
    counts = Counter(Task.objects.filter(run=run).values_list("state", flat=True))
    job_ids = list(Task.objects.filter(run=run).values_list("job_id", flat=True))
    accounted = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-u", user, "--starttime=now-3hours", "--format=JobID,JobName"],
        capture_output=True,
        text=True,
    ).stdout
    elements = Counter(line.split("|")[0] for line in accounted.splitlines() if f"@sh-{run.pk}-" in line)
    twice = sum(1 for c in elements.values() if c > 1)
    print(
        f"sweep: {n} tasks, MaxSubmitJobs={max_submit} enforced: run {Run.objects.get(pk=run.pk).status} in "
        f"{took:.0f} s ({ticks} ticks); tasks {dict(counts)}; {len(set(job_ids))} distinct job ids; "
        f"Slurm accounted {sum(elements.values())} job elements for the run ({twice} twice); "
        f"queue at most {most} of {max_submit}; slurmctld RPCs {rpcs}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["parse", "submit", "chain", "sweep"])
    parser.add_argument("--max-submit", type=int, default=1000)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--links", type=int, default=20)
    parser.add_argument("--poll", type=int, default=60)
    parser.add_argument("--native", default="on,off")
    parser.add_argument("--markers-every", default="5", help="chain: end_markers_every values (0: no markers)")
    parser.add_argument("--watch", default="on", help="chain: watch_end_markers values (on,off)")
    args = parser.parse_args()
    if args.what == "parse":
        bench_parse()
    elif args.what == "submit":
        bench_submit(args.n)
    elif args.what == "sweep":
        bench_sweep(args.n, args.max_submit)
    else:
        bench_chain(
            args.links,
            args.poll,
            [v == "on" for v in args.native.split(",")],
            [float(m) for m in args.markers_every.split(",")],
            [v == "on" for v in args.watch.split(",")],
        )


if __name__ == "__main__":
    main()
