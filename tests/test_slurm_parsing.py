"""Slurm output parsing and script rendering (no cluster needed)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict

import pytest

from backends.base import CommandResult, JobSpec, JobState, SubmitResult
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.slurm.adapter import SlurmAdapter, safe_job_name
from backends.slurm.parsing import parse_sacct, parse_scontrol, parse_sinfo, parse_squeue


def backend(**settings: object) -> SlurmAdapter:
    row = Backend(
        name="hpc", kind="slurm", settings=validate_backend_settings("slurm", {"ssh": {"host": "h"}, **settings})
    )
    adapter = SlurmAdapter(row, data_dir=None)  # type: ignore[arg-type]
    adapter._home = "/home/hut"
    return adapter


def job(**extra: object) -> JobSpec:
    values: dict = dict(
        tag="sh-r1-7-abc123",
        run_id="r1",
        task_id="t.1",
        name="Solve Model",
        command="echo hi",
        output_file="~/logs/r1/t.1.out",
        error_file="~/logs/r1/t.1.err",
    )
    values.update(extra)
    return JobSpec(**values)


def test_squeue_rows():
    text = (
        "12|hut|PENDING|Dependency|normal|1||2026-11-25T12:06:57|N/A|Solve_Model@sh-r1-7-abc123\n"
        "13|bob|RUNNING|None|gpu|4|node1|2026-11-25T12:00:00|2026-11-25T12:01:00|external|job|with|bars\n"
    )
    pending, running = parse_squeue(text)
    assert (pending.state, pending.reason, pending.tag, pending.started_at) == (
        JobState.QUEUED,
        "Dependency",
        "sh-r1-7-abc123",
        None,
    )
    assert (running.state, running.user, running.node, running.cpus, running.name) == (
        JobState.RUNNING,
        "bob",
        "node1",
        4,
        "external|job|with|bars",
    )
    assert running.queue_wait_seconds == 60


SACCT = """\
3|FAILED|3:0|00:00:01|00:00.003|1||4G|2026-11-25T12:06:57|2026-11-25T12:06:58|2026-11-25T12:06:59|n1|None|wrap
3.batch|FAILED|3:0|00:00:01|00:00.003|1|1024K||2026-11-25T12:06:58|2026-11-25T12:06:58|2026-11-25T12:06:59|n1||batch
4|COMPLETED|0:0|00:00:10|00:00:05|2||4096M|2026-11-25T12:06:00|2026-11-25T12:06:30|2026-11-25T12:06:40|n1|None|x@t
4.batch|COMPLETED|2:0|00:00:10|00:00:05|2|2048000K||2026-11-25T12:06:30|2026-11-25T12:06:30|2026-11-25T12:06:40|n1||batch
5|CANCELLED by 0|0:0|00:00:00|00:00:00|1||4G|2026-11-25T12:06:00|None|2026-11-25T12:06:05||None|c
6|TIMEOUT|0:0|00:01:30|00:00:00|1||4G|2026-11-25T12:00:00|2026-11-25T12:00:00|2026-11-25T12:01:30|n1|None|t
7|OUT_OF_MEMORY|0:125|00:00:02|00:00:01|1||1G|2026-11-25T12:00:00|2026-11-25T12:00:00|2026-11-25T12:00:02|n1|None|m
"""


def test_sacct_rows_and_steps():
    jobs = parse_sacct(SACCT)
    assert (jobs["3"].state, jobs["3"].exit_code, jobs["3"].reason) == (JobState.FAILED, 3, "exit code 3")
    assert jobs["3"].max_rss_mb == 1.0 and jobs["3"].requested_mem_mb == 4096
    # The .batch step's non-zero exit code overrides a COMPLETED main row.
    assert (jobs["4"].state, jobs["4"].exit_code) == (JobState.FAILED, 2)
    assert jobs["4"].cpu_efficiency == pytest.approx(5 / (10 * 2))
    assert jobs["4"].queue_wait_seconds == 30 and jobs["4"].max_rss_mb == 2000
    assert (jobs["5"].state, jobs["5"].reason) == (JobState.CANCELLED, "CANCELLED by 0")
    assert (jobs["6"].state, jobs["6"].reason) == (JobState.FAILED, "time limit exceeded (TIMEOUT)")
    assert (jobs["7"].state, jobs["7"].reason) == (JobState.FAILED, "out of memory (OUT_OF_MEMORY)")


SCONTROL = (
    "JobId=42 JobName=x@sh-1 UserId=hut(1001) GroupId=hut(1001) JobState=COMPLETED Reason=None ExitCode=0:0 "
    "RunTime=00:00:01 SubmitTime=2026-11-25T12:00:00 StartTime=2026-11-25T12:00:01 EndTime=2026-11-25T12:00:02 "
    "NodeList=n1\n"
    "JobId=43 JobName=y UserId=hut(1001) JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 RunTime=00:00:00 "
    "NodeList=n1\n"
)


def test_scontrol_fallback_without_accounting():
    jobs = parse_scontrol(SCONTROL)
    assert (jobs["42"].state, jobs["42"].user, jobs["42"].elapsed_seconds) == (JobState.COMPLETED, "hut", 1.0)
    # Slurm's NonZeroExitCode (also what sacct says of a failed array element) reads as the exit code.
    assert (jobs["43"].state, jobs["43"].exit_code, jobs["43"].reason) == (JobState.FAILED, 1, "exit code 1")


def test_out_of_memory_and_never_started_flags():
    jobs = parse_sacct(SACCT)
    assert {job_id for job_id, s in jobs.items() if s.out_of_memory} == {"7"}  # OUT_OF_MEMORY
    # Cancelled while pending (Start None): the engine's "dropped while held" case.
    assert {job_id for job_id, s in jobs.items() if s.never_started} == {"5"}
    remembered = parse_scontrol(SCONTROL)
    assert (remembered["42"].never_started, remembered["43"].never_started) == (False, True)  # 43: no StartTime
    assert not any(s.out_of_memory for s in remembered.values())
    pending, running = parse_squeue(
        "12|hut|PENDING|Dependency|normal|1||2026-11-25T12:06:57|N/A|Solve_Model@sh-r1-7-abc123\n"
        "13|bob|RUNNING|None|gpu|4|node1|2026-11-25T12:00:00|2026-11-25T12:01:00|external|job|with|bars\n"
    )
    assert not pending.never_started and not running.never_started  # not final yet


# Recorded on the test cluster (Slurm 22.05): a parent that failed, and two jobs held on it
# with --kill-on-invalid-dep=yes. Slurm gives the dropped jobs a Start (= End) although they
# never ran; only "None assigned" / an empty NodeList says so.
SACCT_DROPPED_WHILE_HELD = """\
4|FAILED|1:0|00:00:01|0|1|||2026-12-05T22:47:51|2026-12-05T22:47:51|2026-12-05T22:47:52|vm|None|Solve@sh-a
4.batch|FAILED|1:0|00:00:01|0|1|||2026-12-05T22:47:51|2026-12-05T22:47:51|2026-12-05T22:47:52|vm||batch
5|CANCELLED|0:0|00:00:00|0|0|||2026-12-05T22:47:51|2026-12-05T22:47:54|2026-12-05T22:47:54|None assigned|Dependency|H@b
6|CANCELLED|0:0|00:00:00|0|0|||2026-12-05T22:47:51|2026-12-05T22:47:54|2026-12-05T22:47:54|None assigned|None|H@c
"""
SCONTROL_DROPPED_WHILE_HELD = (
    "JobId=5 JobName=Held@sh-b UserId=hut(1001) JobState=CANCELLED Reason=DependencyNeverSatisfied "
    "ExitCode=0:0 RunTime=00:00:00 SubmitTime=2026-12-05T22:47:51 StartTime=2026-12-05T22:47:54 "
    "EndTime=2026-12-05T22:47:54 ReqNodeList=(null) ExcNodeList=(null) NodeList=\n"
)


def test_a_job_dropped_while_held_never_started_although_slurm_gives_it_a_start():
    """CI once saw dependents of a failure end "cancelled", not "dep_failed": one poll read
    the parent's failure and the held jobs' drop together, and the Start Slurm gives a
    dropped job hid that it never ran."""
    jobs = parse_sacct(SACCT_DROPPED_WHILE_HELD)
    assert not jobs["4"].never_started and jobs["4"].started_at is not None
    assert jobs["5"].never_started and jobs["6"].never_started
    assert (jobs["5"].started_at, jobs["5"].node) == (None, "")
    remembered = parse_scontrol(SCONTROL_DROPPED_WHILE_HELD)["5"]
    assert remembered.never_started and remembered.started_at is None


def submit_with_answer(adapter: SlurmAdapter, jobs: list[JobSpec], stdout: str) -> list[SubmitResult]:
    def run_script(script: str, timeout: float = 300) -> CommandResult:
        return CommandResult(0, stdout, "")

    adapter.transport.run_script = run_script  # type: ignore[method-assign]
    return adapter.submit([(spec, "#!/bin/bash\ntrue\n") for spec in jobs])


def test_dependency_refusal_sets_parent_gone_only_for_held_jobs():
    refused = "sbatch: error: Batch job submission failed: Job dependency problem"
    held = job(tag="sh-held", after_job_ids=["99"])
    plain = job(tag="sh-plain")
    other = job(tag="sh-other", after_job_ids=["98"])
    child = job(tag="sh-child", after_tags=["sh-plain"])
    results = submit_with_answer(
        backend(),
        [held, plain, other, child],
        f"SCRIPTHUT-ERR sh-held {refused}\n"
        f"SCRIPTHUT-ERR sh-plain {refused}\n"
        "SCRIPTHUT-ERR sh-other sbatch: error: Batch job submission failed: Invalid partition name specified\n"
        "SCRIPTHUT-SKIP sh-child\n",
    )
    assert [(r.tag, r.parent_gone, r.retry) for r in results] == [
        ("sh-held", True, False),
        ("sh-plain", False, False),  # no native dependency: an ordinary rejection
        ("sh-other", False, False),
        ("sh-child", True, False),  # its parent in the batch was not submitted
    ]


def test_sinfo():
    (part,) = parse_sinfo("normal*|up|1|idle|0/2/0/2\n")
    assert asdict(part) == {
        "partition": "normal",
        "default": True,
        "available": "up",
        "nodes": 1,
        "state": "idle",
        "cpus_allocated": 0,
        "cpus_idle": 2,
        "cpus_other": 0,
        "cpus_total": 2,
    }


def test_script_directives_and_quoting():
    tricky = "it's $(touch /tmp/pwned) `id`"
    script = backend(account="my-alloc", login_shell=True).render_script(
        job(gres="gpu:1", env={"TRICKY": tricky}, working_dir="~/proj dir", memory="512M", time_limit="2-00:00:00")
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    assert "#SBATCH --job-name=Solve_Model@sh-r1-7-abc123" in lines
    assert "#SBATCH --mem=512M" in lines and "#SBATCH --time=2-00:00:00" in lines
    assert "#SBATCH --account=my-alloc" in lines and "#SBATCH --gres=gpu:1" in lines
    assert "#SBATCH --output=/home/hut/logs/r1/t.1.out" in lines
    assert "export TRICKY='it'\"'\"'s $(touch /tmp/pwned) `id`'" in lines
    assert """cd "$HOME"/'proj dir' || { echo 'scripthut: cannot cd to ~/proj dir' >&2; exit 1; }""" in lines
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_bad_directive_values_are_refused():
    with pytest.raises(ValueError, match="partition"):
        backend().render_script(job(partition="normal\n#SBATCH --uid=0"))
    with pytest.raises(ValueError, match="double quote"):
        backend().render_script(job(output_file='/tmp/a"b'))


def test_safe_job_name():
    assert safe_job_name("Solve Model (v2)!") == "Solve_Model_v2"
    assert safe_job_name("$(rm -rf ~)") == "rm_-rf"


def test_submit_script_with_dependencies_in_one_batch():
    adapter = backend()
    first = job(tag="sh-a", task_id="a")
    second = job(tag="sh-b", task_id="b", after_tags=["sh-a"], after_job_ids=["99"])
    script = adapter.submit_script([(first, "#!/bin/bash\necho a\n"), (second, "#!/bin/bash\necho b\n")])
    assert '--dependency=afterok:99:"${jid_0}" --kill-on-invalid-dep=yes' in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_parsers_are_fast():
    squeue = "\n".join(
        f"{i}|user{i % 50}|RUNNING|None|normal|1|node{i % 9}|2026-11-25T12:00:00|2026-11-25T12:00:05|job{i}@sh-x-{i}"
        for i in range(50_000)
    )
    start = time.perf_counter()
    assert len(parse_squeue(squeue)) == 50_000
    # Not a benchmark (see bench/): only a guard against an accidental quadratic parser.
    assert time.perf_counter() - start < 5
