"""PBS adapter: parsers on real OpenPBS 23.06 output (backends/pbs/fixtures), scripts and
submit batches checked with bash, remote calls simulated. No PBS server, no SSH."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.base import BackendError, CommandResult, JobSpec, JobState, JobStatus
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.pbs.adapter import RC_MARK, PbsAdapter
from backends.pbs.parsing import parse_pbsnodes, parse_qstat_json, parse_qstat_text, parse_qsub
from backends.pbs.rendering import pbs_memory, pbs_path, pbs_walltime, safe_job_name
from backends.registry import adapter_class

FIXTURES = Path(__file__).parent.parent / "backends" / "pbs" / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def make_backend(tmp_path: Path, **settings: object) -> PbsAdapter:
    values = validate_backend_settings("pbs", {"ssh": {"host": "pbs-login.example"}, **settings})
    return PbsAdapter(Backend(name="pbs", kind="pbs", settings=values), tmp_path)


def job(**fields: object) -> JobSpec:
    values: dict[str, object] = {
        "tag": "sh-7-42-a1b2c3",
        "run_id": "7",
        "task_id": "solve",
        "name": "Solve Model",
        "command": "julia solve.jl",
        "working_dir": "~/projects/jmp",
        "output_file": "~/.cache/scripthut/logs/7/solve.out",
        "error_file": "~/.cache/scripthut/logs/7/solve.err",
    }
    values.update(fields)
    return JobSpec(**values)  # type: ignore[arg-type]


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def one(jobs: dict[str, JobStatus]) -> JobStatus:
    (status,) = jobs.values()
    return status


# -- parsing qstat -f: the recorded job life cycles -------------------------------------


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_finished_ok(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    status = parse(fixture("01-ok.qstat-fx" + suffix))["2.vm"]
    assert (status.state, status.exit_code, status.reason) == (JobState.COMPLETED, 0, "")
    assert (status.name, status.user, status.partition, status.cpus, status.node) == (
        "fx01_ok",
        "researcher",
        "workq",
        1,
        "vm",
    )
    assert status.submitted_at == utc("2026-11-25 12:22:59")  # qtime
    assert status.started_at == utc("2026-11-25 12:23:02")  # stime
    assert status.finished_at == utc("2026-11-25 12:23:22")  # obittime (= mtime)
    assert status.elapsed_seconds == 20  # resources_used.walltime
    assert status.queue_wait_seconds == 3
    assert status.requested_mem_mb == 512 and status.max_rss_mb == pytest.approx(5560 / 1024)
    assert status.cpu_efficiency == 0.0  # sleep 20: cput 00:00:00


def test_queued_and_running() -> None:
    queued = parse_qstat_text(fixture("01-ok.qstat-f-queued.txt"))["2.vm"]
    assert (queued.state, queued.reason, queued.started_at, queued.node) == (JobState.QUEUED, "queued", None, "")
    running = parse_qstat_text(fixture("01-ok.qstat-f-running.txt"))["2.vm"]
    assert (running.state, running.node, running.exit_code) == (JobState.RUNNING, "vm", None)
    assert running.started_at == utc("2026-11-25 12:23:02")


def test_queued_reason_is_the_comment_even_when_wrapped() -> None:
    # The comment wraps at 80 columns after "A: 2 " (a trailing space): joined as printed.
    status = parse_qstat_text(fixture("09c-ncpus4.qstat-f-queued-cannot-run.txt"))["1.vm"]
    assert status.state == JobState.QUEUED
    assert status.reason == "Can Never Run: Insufficient amount of resource: ncpus (R: 4 A: 2 T: 2)"
    assert status.cpus == 4
    waiting = parse_qstat_text(fixture("10-waiting.qstat-f-queued-insufficient.txt"))["10.vm"]
    assert waiting.reason == "Not Running: Not enough free nodes available"


def test_holds() -> None:
    held = parse_qstat_text(fixture("05-qdel-queued.qstat-f-held.txt"))["6.vm"]
    assert (held.state, held.reason) == (JobState.QUEUED, "held (user hold)")
    dependent = parse_qstat_text(fixture("06-chain-B.qstat-f-queued-depend.txt"))["8.vm"]
    assert (dependent.state, dependent.reason) == (JobState.QUEUED, "waiting for dependency afterok:7.vm@vm")


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_exit_3(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    status = parse(fixture("02-exit3.qstat-fx" + suffix))["3.vm"]
    assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 3, "exit code 3")


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_walltime_kill(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    # Exit_status -29 (JOB_EXEC_KILL_WALLTIME), comment "... and exceeded resource walltime".
    status = parse(fixture("03-walltime.qstat-fx" + suffix))["4.vm"]
    assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, -29, "walltime exceeded")
    assert status.elapsed_seconds == 20


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_qdel_while_running(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    # Exit_status 271 = 256 + SIGTERM, substate 91, comment "... and terminated by researcher@vm".
    status = parse(fixture("04-qdel-running.qstat-fx" + suffix))["5.vm"]
    assert status.state == JobState.CANCELLED
    assert status.reason == "terminated by researcher@vm (SIGTERM)"
    assert status.exit_code == 128 + 15  # as a shell (and the Slurm adapter) reports a SIGTERM


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_qdel_before_it_ran(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    # F, substate 91, no Exit_status, no stime.
    status = parse(fixture("05-qdel-queued.qstat-fx" + suffix))["6.vm"]
    assert (status.state, status.exit_code, status.reason) == (JobState.CANCELLED, None, "deleted before it ran")
    assert status.started_at is None and status.finished_at == utc("2026-11-25 12:23:26")


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_deleted_by_a_failed_dependency(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    # F, substate 92, no Exit_status: the server deleted it when afterok:7.vm failed.
    status = parse(fixture("06-chain-B.qstat-fx" + suffix))["8.vm"]
    assert status.state == JobState.CANCELLED
    assert status.reason == "deleted by PBS: dependency afterok:7.vm@vm can never be satisfied"
    assert status.started_at is None


@pytest.mark.parametrize("parse, suffix", [(parse_qstat_text, ".txt"), (parse_qstat_json, "-json.txt")])
def test_never_started_flag(parse: Callable[[str], dict[str, JobStatus]], suffix: str) -> None:
    jobs = parse(fixture("20-final.qstat-fx" + suffix))
    # Deleted before they ran (qdel, or by PBS for a dependency that can never be met).
    assert {job_id for job_id, s in jobs.items() if s.never_started} == {"6.vm", "8.vm", "20.vm", "23.vm"}
    assert not any(s.out_of_memory for s in jobs.values())
    held = parse_qstat_text(fixture("06-chain-B.qstat-f-queued-depend.txt"))["8.vm"]
    assert not held.never_started  # still held: not final


def test_out_of_memory_flag_from_the_reason() -> None:
    # The recorded array whose subjob failed, its comment worded as an OOM kill would be.
    text = fixture("20-final.qstat-fx.txt").replace("at 12:25 and failed\n", "at 12:25 and failed (oom-kill)\n")
    assert text != fixture("20-final.qstat-fx.txt")
    jobs = parse_qstat_text(text)
    assert jobs["22[].vm"].reason.endswith("failed (oom-kill)")
    assert {job_id for job_id, s in jobs.items() if s.out_of_memory} == {"22[].vm"}


def test_live_listing_of_mixed_states() -> None:
    text = parse_qstat_text(fixture("12-snapshot.qstat-f.txt"))
    states = {job_id: s.state for job_id, s in text.items()}
    assert states == {
        "2.vm": JobState.RUNNING,
        "3.vm": JobState.RUNNING,
        "4.vm": JobState.RUNNING,
        "5.vm": JobState.RUNNING,
        "6.vm": JobState.QUEUED,
        "7.vm": JobState.RUNNING,
        "8.vm": JobState.QUEUED,
        "9[].vm": JobState.RUNNING,  # array parent, state B
        "10.vm": JobState.QUEUED,
    }
    assert _fields(parse_qstat_json(fixture("12-snapshot.qstat-f-json.txt"))) == _fields(text)


def test_waiting_suspended_and_array_states() -> None:
    jobs = parse_qstat_json(fixture("19-snapshot2.qstat-f-json.txt"))
    assert (jobs["23.vm"].state, jobs["23.vm"].reason) == (JobState.QUEUED, "waiting until Wed Nov 25 14:25:00 2026")
    assert (jobs["24.vm"].state, jobs["24.vm"].reason) == (JobState.RUNNING, "suspended")
    assert jobs["22[].vm"].state == JobState.RUNNING


def _fields(jobs: dict[str, JobStatus]) -> dict[str, tuple[object, ...]]:
    return {
        job_id: (
            s.state,
            s.exit_code,
            s.reason,
            s.name,
            s.user,
            s.partition,
            s.cpus,
            s.node,
            s.tag,
            s.submitted_at,
            s.started_at,
            s.finished_at,
            s.elapsed_seconds,
            s.cpu_efficiency,
            s.max_rss_mb,
            s.requested_mem_mb,
        )
        for job_id, s in jobs.items()
    }


def test_text_and_json_forms_agree() -> None:
    text = parse_qstat_text(fixture("20-final.qstat-fx.txt"))
    json_form = parse_qstat_json(fixture("20-final.qstat-fx-json.txt"))
    assert len(text) == 22
    assert _fields(text) == _fields(json_form)
    # Every outcome the recording has, as the engine sees it.
    assert {job_id: s.state.value for job_id, s in text.items() if "[" not in job_id} == {
        "1.vm": "completed",
        "2.vm": "completed",
        "3.vm": "failed",
        "4.vm": "failed",
        "5.vm": "cancelled",
        "6.vm": "cancelled",
        "7.vm": "failed",
        "8.vm": "cancelled",
        "10.vm": "completed",
        "11.vm": "completed",
        "12.vm": "completed",
        "13.vm": "completed",
        "14.vm": "completed",
        "15.vm": "completed",
        "16.vm": "completed",
        "20.vm": "cancelled",  # afterok on an unknown job id
        "23.vm": "cancelled",  # qdel while waiting (W)
        "24.vm": "completed",
        "26.vm": "completed",
    }
    assert text["14.vm"].node == "vm" and text["14.vm"].cpus == 4  # exec_host vm/3+vm/4+vm/5*2
    # An array whose subjob failed: Exit_status 0 but substate 93.
    assert text["22[].vm"].state == JobState.FAILED


def test_json_quirks_all_digit_name_and_no_jobs() -> None:
    assert one(parse_qstat_json(fixture("21-json-edge.qstat-fx-json.txt"))).name == "2024"  # "Job_Name":2024
    assert one(parse_qstat_text(fixture("21-json-edge.qstat-fx.txt"))).name == "2024"
    assert parse_qstat_json(fixture("00-qstat-f-json-nojobs.txt")) == {}
    assert parse_qstat_json(fixture("16-qstat-fx-json-unknown-id.txt")) == {}  # no trailing newline
    assert list(parse_qstat_json(fixture("16-qstat-fx-json-mixed-known-unknown.txt"))) == ["2.vm"]
    # Several qstat calls in a row (one per chunk of ids): documents back to back.
    both = fixture("16-qstat-fx-json-unknown-id.txt") + fixture("02-exit3.qstat-fx-json.txt")
    assert list(parse_qstat_json(both)) == ["3.vm"]


def test_json_repairs_what_pbs_leaves_invalid() -> None:
    text = fixture("21-json-edge.qstat-fx-json.txt")
    broken = text.replace('"Job_Name":2024', '"Job_Name":0042').replace("C:\\temp dir", "C:\\xtemp dir")
    assert broken != text
    assert one(parse_qstat_json(broken)).name == "0042"


def test_tag_from_variable_list() -> None:
    # 21-json-edge was submitted with -v GREETING=...; a -v SCRIPTHUT_TAG=... lands in the same place.
    text = fixture("21-json-edge.qstat-fx.txt").replace(
        "GREETING=say hi C:\\\\\\\\temp dir", "SCRIPTHUT_TAG=sh-7-42-a1b2c3"
    )
    json_text = fixture("21-json-edge.qstat-fx-json.txt").replace(
        '"GREETING":"say hi C:\\\\\\\\temp dir"', '"SCRIPTHUT_TAG":"sh-7-42-a1b2c3"'
    )
    assert one(parse_qstat_text(text)).tag == "sh-7-42-a1b2c3"
    assert one(parse_qstat_json(json_text)).tag == "sh-7-42-a1b2c3"
    # Wrapped at 80 columns in the middle of the name: continuation lines are joined as they are.
    wrapped = text.replace("SCRIPTHUT_TAG=sh-7-42", "SCRIPTHUT_T\n\tAG=sh-7-42")
    assert one(parse_qstat_text(wrapped)).tag == "sh-7-42-a1b2c3"
    assert one(parse_qstat_text(fixture("21-json-edge.qstat-fx.txt"))).tag == ""


# Shaped like Slurm's contribs/torque/qstat.pl print_job_full (slurm-wlm-torque); not a recording.
SLURM_WRAPPER_QSTAT = (
    "Job Id:\t101\n\tJob_Name = solve\n\tJob_Owner = alice@login1\n\tjob_state = C\n\tqueue = normal\n"
    "\tqtime = Wed Nov 25 12:00:00 2026\n\tmtime = Wed Nov 25 12:00:05 2026\n\tctime = Wed Nov 25 12:01:05 2026\n"
    "\texec_host = node1/1\n\tPriority = 1\n\teuser = alice(1000)\n\tegroup = alice(1000)\n"
    "\tResource_List.walltime = 01:00:00\n\tResource_List.nodect = 1\n\tResource_List.ncpus = 1\n\n"
    "Job Id:\t102\n\tJob_Name = other\n\tJob_Owner = bob@login1\n\tjob_state = R\n\tqueue = normal\n"
    "\tqtime = Wed Nov 25 12:00:00 2026\n\tmtime = Wed Nov 25 12:00:05 2026\n\texec_host = node2/4\n"
    "\tResource_List.ncpus = 4\n\n"
)


def test_slurm_torque_wrapper_shape() -> None:
    jobs = parse_qstat_text(SLURM_WRAPPER_QSTAT)
    # C without an exit status: the outcome is unknown, the engine's grace period decides.
    assert (jobs["101"].state, jobs["101"].exit_code) == (JobState.UNKNOWN, None)
    assert (jobs["102"].state, jobs["102"].user, jobs["102"].node, jobs["102"].cpus) == (
        JobState.RUNNING,
        "bob",
        "node2",
        4,
    )
    assert jobs["102"].started_at == utc("2026-11-25 12:00:05")  # the wrapper's mtime is the start


def test_torque_exit_status() -> None:
    text = "Job Id: 55.torque\n    Job_Name = x\n    job_state = C\n    exit_status = -11\n\n"
    status = parse_qstat_text(text)["55.torque"]
    assert (status.state, status.reason) == (JobState.FAILED, "walltime exceeded")  # Torque's -11


def test_pbsnodes() -> None:
    assert parse_pbsnodes(fixture("00-pbsnodes-av.txt")) == {
        "nodes_total": 1,
        "nodes_free": 1,
        "nodes_down": 0,
        "cpus_total": 2,
        "cpus_allocated": 0,
        "cpus_free": 2,
    }
    busy = parse_pbsnodes(fixture("09-resources.pbsnodes-av-running.txt"))  # state job-busy, 8/8 assigned
    assert (busy["nodes_free"], busy["cpus_total"], busy["cpus_free"]) == (0, 8, 0)
    partly = parse_pbsnodes(fixture("19-snapshot2.pbsnodes-av.txt"))  # free, 3 of 8 assigned
    assert (partly["nodes_free"], partly["cpus_allocated"], partly["cpus_free"]) == (1, 3, 5)
    down = "n1\n     state = down,offline\n     resources_available.ncpus = 16\n"
    assert parse_pbsnodes(down)["nodes_down"] == 1 and parse_pbsnodes(down)["cpus_free"] == 0
    torque = "n2\n     state = free\n     np = 8\n     jobs = 0/12.srv, 1-3/13.srv\n"
    assert parse_pbsnodes(torque)["cpus_free"] == 4


def test_parse_qsub_output() -> None:
    assert parse_qsub(fixture("01-ok.qsub.txt")) == "2.vm"
    assert parse_qsub(fixture("07-array.qsub.txt")) == "9[].vm"
    assert parse_qsub("12345.pbs-server\n") == "12345.pbs-server"
    assert parse_qsub("") == ""


def test_parsers_are_fast() -> None:
    snapshot = fixture("12-snapshot.qstat-f.txt")
    lines = snapshot.count("\n")
    copies = 50_000 // lines + 1
    text = "".join(snapshot.replace(".vm\n", f".c{n}\n") for n in range(copies))
    started = time.perf_counter()
    jobs = parse_qstat_text(text)
    assert len(jobs) == 9 * copies
    assert time.perf_counter() - started < 5  # about 0.1 s; a generous bound against regressions


# -- scripts ------------------------------------------------------------------------------


def directives(script: str) -> list[str]:
    """The lines qsub takes as directives: ``#PBS`` lines (after any indent) before the first
    command, a command being what OpenPBS's pbs_isexecutable() says (check_job_script.c)."""
    found = []
    for line in script.splitlines():
        stripped = line.lstrip()
        if stripped and not line.startswith((":", "#!")) and not stripped.startswith("#"):
            break
        if stripped.startswith("#PBS"):
            found.append(stripped)
    return found


def test_render_script(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, account="my-allocation", queue="batch", login_shell=True)
    script = backend.render_script(job(cpus=8, memory="4G", time_limit="2-00:00:00", gres="gpu:1", partition="gpu"))
    assert script.startswith("#!/bin/bash -l\n")
    assert directives(script) == [
        "#PBS -N Solve_Model",  # the spec's "#PBS -N Solve Model" is rejected by qsub (fixture 08b)
        "#PBS -l select=1:ncpus=8:mem=4gb:ngpus=1",
        "#PBS -l walltime=48:00:00",
        "#PBS -q batch",  # the backend's queue wins over the task's partition
        "#PBS -A my-allocation",
        "#PBS -o .cache/scripthut/logs/7/solve.out",  # relative to $HOME, where qsub runs
        "#PBS -e .cache/scripthut/logs/7/solve.err",
    ]
    assert "# scripthut-tag: sh-7-42-a1b2c3\n" in script
    assert 'cd "$HOME"/projects/jmp || {' in script and script.rstrip().endswith("julia solve.jl")
    # Every #PBS line comes before the first command: qsub stops reading them there.
    assert len(directives(script)) == script.count("\n#PBS ")


def test_render_script_defaults(tmp_path: Path) -> None:
    script = make_backend(tmp_path).render_script(job(memory="512M", partition="workq", time_limit="90"))
    assert script.startswith("#!/bin/bash\n")
    assert "#PBS -l select=1:ncpus=1:mem=512mb" in directives(script)
    assert "#PBS -l walltime=01:30:00" in directives(script)
    assert "#PBS -q workq" in directives(script)  # no queue setting: the task's partition
    assert not any(d.startswith("#PBS -A") for d in directives(script))


@pytest.mark.parametrize(
    "memory, expected",
    [("4G", "4gb"), ("512M", "512mb"), ("1024", "1024mb"), ("2GB", "2gb"), ("1.5G", "1536mb"), ("1T", "1tb")],
)
def test_memory(memory: str, expected: str) -> None:
    assert pbs_memory(memory) == expected


def test_walltime_and_names() -> None:
    assert pbs_walltime("1:00:00") == "01:00:00"
    assert pbs_walltime("30") == "00:30:00"  # minutes, as in Slurm
    assert safe_job_name("Solve Model") == "Solve_Model"
    assert safe_job_name("2024") == "task_2024"
    assert safe_job_name("  ") == "task"
    assert safe_job_name("x" * 300) == "x" * 236


def test_log_paths() -> None:
    assert pbs_path("~/logs/a.out", "~") == "logs/a.out"
    assert pbs_path("/scratch/a.out", "~/p") == "/scratch/a.out"
    assert pbs_path("logs/a.out", "~/p") == "p/logs/a.out"  # relative: to the working dir
    assert pbs_path("logs/a.out", "/scratch/p") == "/scratch/p/logs/a.out"
    assert pbs_path("logs/a.out", "~") == "logs/a.out"
    with pytest.raises(ValueError):
        pbs_path("/x:y/a.out", "~")  # qsub would read host "/x"
    with pytest.raises(ValueError):
        pbs_path("~bob/a.out", "~")


HOSTILE = [
    "a\n#PBS -q evil",
    'a" -W depend=afterok:1',
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a b'c",
    "x;rm -rf ~",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_cannot_break_out(tmp_path: Path, value: str) -> None:
    backend = make_backend(tmp_path)
    spec = job(name=value, task_id=value, working_dir=str(tmp_path), command="echo ran > ran.txt", env={"V": value})
    script = backend.render_script(spec)
    lines = directives(script)
    assert len(lines) == 6  # -N, 2x -l, -q, -o, -e ... and nothing smuggled in
    assert re.fullmatch(r"#PBS -N [A-Za-z][A-Za-z0-9_.-]*", lines[0])
    assert lines[1:] == directives(backend.render_script(job()))[1:]
    for field in ("partition", "output_file"):
        try:
            rendered = backend.render_script(job(**{field: value}))
        except ValueError:
            continue  # refused: fine
        assert len(directives(rendered)) == 6
        assert all("\n" not in d for d in directives(rendered))
    with pytest.raises(ValueError):
        backend.render_script(job(partition=value))
    # The script itself runs only the task's command: values are data, never code.
    marker = Path("/tmp/pwned")
    marker.unlink(missing_ok=True)
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    assert (tmp_path / "ran.txt").read_text() == "ran\n"
    assert not marker.exists()


def test_output_path_with_spaces_is_quoted(tmp_path: Path) -> None:
    script = make_backend(tmp_path).render_script(job(output_file="~/my logs/$(x).out"))
    assert '#PBS -o "my logs/$(x).out"' in directives(script)
    with pytest.raises(ValueError):
        make_backend(tmp_path).render_script(job(output_file="~/a\nb.out"))
    with pytest.raises(ValueError):
        make_backend(tmp_path).render_script(job(gres="shard:2"))


def test_submit_argv(tmp_path: Path) -> None:
    argv = make_backend(tmp_path).submit_argv(job())
    assert argv == [
        "qsub",
        "-N",
        "Solve_Model",
        "-o",
        ".cache/scripthut/logs/7/solve.out",
        "-e",
        ".cache/scripthut/logs/7/solve.err",
        "-v",
        "SCRIPTHUT_TAG=sh-7-42-a1b2c3",
    ]
    assert make_backend(tmp_path).dependency_args("'41.vm':\"${jid_0}\"") == "-W depend=afterok:'41.vm':\"${jid_0}\""


# -- the submit batch --------------------------------------------------------------------

FAKE_QSUB = r"""#!/bin/bash
# Records its arguments, working directory and script; prints the next job id.
n=$(( $(cat "$QSUB_LOG/count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$QSUB_LOG/count"
printf '%s\n' "$@" > "$QSUB_LOG/$n.args"
pwd > "$QSUB_LOG/$n.cwd"
cat > "$QSUB_LOG/$n.script"
if grep -q 'exit 99' "$QSUB_LOG/$n.script"; then echo "qsub: Unknown queue" >&2; exit 170; fi
echo "$n.vm"
"""


def three_jobs(backend: PbsAdapter, tmp_path: Path, fail_first: bool = False) -> list[tuple[JobSpec, str]]:
    first = job(tag="sh-7-1-aaaaaa", task_id="a", name="a", command="exit 99" if fail_first else "true")
    second = job(tag="sh-7-2-bbbbbb", task_id="b", name="b", output_file="logs/b.out", working_dir="~/w")
    third = job(tag="sh-7-3-cccccc", task_id="c", name="c", after_tags=["sh-7-1-aaaaaa"], after_job_ids=["41.vm"])
    return [(spec, backend.render_script(spec)) for spec in (first, second, third)]


def run_batch(script: str, tmp_path: Path) -> str:
    home, log = tmp_path / "home", tmp_path / "qsub-log"
    (home / "w").mkdir(parents=True, exist_ok=True)  # job 2's working dir
    log.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "qsub").write_text(FAKE_QSUB)
    (bin_dir / "qsub").chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}", "QSUB_LOG": str(log)}
    done = subprocess.run(["bash", "-s"], input=script, text=True, capture_output=True, env=env, cwd="/", timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_submit_script_for_three_jobs_with_dependencies(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    jobs = three_jobs(backend, tmp_path)
    script = backend.submit_script(jobs)
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert script.startswith('cd "$HOME" || exit 1\n')
    # Job 3 waits on an existing job and on job 1 of this batch, known only once qsub answered.
    assert '-W depend=afterok:41.vm:"${jid_0}"' in script
    assert 'if [ -z "${jid_0}" ]; then' in script
    for spec, rendered in jobs:
        assert rendered.rstrip("\n") in script
        assert shlex.quote(f"SCRIPTHUT_TAG={spec.tag}") in script

    out = run_batch(script, tmp_path)
    assert out.splitlines() == [
        "SCRIPTHUT-OK sh-7-1-aaaaaa 1.vm",
        "SCRIPTHUT-OK sh-7-2-bbbbbb 2.vm",
        "SCRIPTHUT-OK sh-7-3-cccccc 3.vm",
    ]
    log = tmp_path / "qsub-log"
    assert (log / "3.args").read_text().splitlines()[-2:] == ["-W", "depend=afterok:41.vm:1.vm"]
    assert (log / "1.cwd").read_text().strip() == str(tmp_path / "home")  # relative -o/-e resolve here
    assert (log / "2.script").read_text() == jobs[1][1]  # the script reached qsub on stdin, intact
    assert (tmp_path / "home" / "w" / "logs").is_dir()  # log dirs made before qsub
    assert (tmp_path / "home" / ".cache" / "scripthut" / "logs" / "7").is_dir()


def test_submit_parses_results_and_skips_children_of_rejected_jobs(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    jobs = three_jobs(backend, tmp_path, fail_first=True)

    def run_script(script: str, timeout: float = 300) -> CommandResult:
        return CommandResult(0, run_batch(script, tmp_path), "")

    backend.transport.run_script = run_script  # type: ignore[method-assign]
    results = backend.submit(jobs)
    assert [(r.tag, r.job_id, r.error) for r in results] == [
        ("sh-7-1-aaaaaa", "", "qsub: Unknown queue"),
        ("sh-7-2-bbbbbb", "2.vm", ""),  # the fake qsub counts the rejected one too
        ("sh-7-3-cccccc", "", ""),  # parent rejected: not sent, submitted again later
    ]


def answer_submits(backend: PbsAdapter, *answers: CommandResult) -> None:
    """The backend's next submit batches get these answers, in order."""
    queue = list(answers)

    def run_script(script: str, timeout: float = 300) -> CommandResult:
        return queue.pop(0)

    backend.transport.run_script = run_script  # type: ignore[method-assign]


def test_submit_defers_what_the_server_cannot_take_now(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    jobs = three_jobs(backend, tmp_path)[:2]
    answer_submits(
        backend,
        CommandResult(
            1,
            "SCRIPTHUT-ERR sh-7-1-aaaaaa qsub: cannot connect to server pbs-server (errno=15010)\n"
            "SCRIPTHUT-ERR sh-7-2-bbbbbb qsub: Unknown queue\n",
            "",
        ),
        # A batch that could not take the submit lock sent nothing.
        CommandResult(75, "", "an earlier ScriptHut submission is still running on this host\n"),
    )
    results = backend.submit(jobs)
    assert [(r.tag, r.retry) for r in results] == [("sh-7-1-aaaaaa", True), ("sh-7-2-bbbbbb", False)]
    with pytest.raises(BackendError, match="still running on this host"):
        backend.submit(jobs)


def test_dependency_refusal_sets_parent_gone_only_for_held_jobs(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    jobs = three_jobs(backend, tmp_path)  # the third waits on 41.vm and on the first
    # Slurm's qsub wrapper passes on sbatch's refusal of a dependency on a job it no longer knows.
    refused = "sbatch: error: Batch job submission failed: Job dependency problem"
    answer_submits(
        backend,
        CommandResult(
            1,
            f"SCRIPTHUT-OK sh-7-1-aaaaaa 1.vm\nSCRIPTHUT-ERR sh-7-2-bbbbbb {refused}\n"
            f"SCRIPTHUT-ERR sh-7-3-cccccc {refused}\n",
            "",
        ),
        CommandResult(1, "SCRIPTHUT-ERR sh-7-3-cccccc qsub: Unknown queue\n", ""),
    )
    results = backend.submit(jobs)
    assert [(r.tag, r.job_id, r.parent_gone) for r in results] == [
        ("sh-7-1-aaaaaa", "1.vm", False),
        ("sh-7-2-bbbbbb", "", False),  # no native dependency: an ordinary rejection
        ("sh-7-3-cccccc", "", True),
    ]
    assert [r.parent_gone for r in backend.submit(jobs[2:])] == [False]


# -- poll, find_submitted, cancel, cluster_info with a simulated server -----------------


class FakeServer:
    """Answers the commands of a script as bash would, from canned (stdout, stderr, rc)."""

    def __init__(self, answers: dict[str, tuple[str, str, int]]):
        self.answers = answers
        self.scripts: list[str] = []

    def run_script(self, script: str, timeout: float = 300) -> CommandResult:
        self.scripts.append(script)
        stdout, stderr, code = [], [], 0
        for line in script.splitlines():
            if not line.startswith(("qstat", "qdel")):
                continue
            # The longest canned command the line starts with; the rest are job ids.
            command = max((c for c in self.answers if line == c or line.startswith(c + " ")), key=len)
            out, err, code = self.answers[command]
            stdout.append(out + f"\n{RC_MARK} {code}\n" if line.startswith("qstat") else out)
            stderr.append(err)
        return CommandResult(code, "".join(stdout), "".join(stderr))


def test_poll_in_one_call(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    server = FakeServer(
        {
            "qstat -f -F json": (fixture("12-snapshot.qstat-f-json.txt"), "", 0),
            "qstat -f -x -F json": (
                fixture("02-exit3.qstat-fx-json.txt") + fixture("16-qstat-fx-json-unknown-id.txt"),
                "qstat: Unknown Job Id 99999.vm\n",
                153,
            ),
        }
    )
    backend.transport.run_script = server.run_script  # type: ignore[method-assign]
    result = backend.poll(["3.vm", "99999.vm", "10"])
    assert len(server.scripts) == 1
    assert "qstat -f -x -F json 3.vm 99999.vm 10\n" in server.scripts[0]
    assert result.statuses["3.vm"].state == JobState.FAILED  # from the history, not the live R
    assert result.statuses["99999.vm"].state == JobState.UNKNOWN
    assert result.statuses["10"].state == JobState.QUEUED  # short id matched 10.vm
    assert result.statuses["10"].job_id == "10"
    assert {s.job_id for s in result.observed} == {f"{n}.vm" for n in range(2, 11)} - {"9.vm"} | {"9[].vm"}


def test_poll_falls_back_to_text_then_plain_and_remembers(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    usage = "qstat: invalid option -- 'F'\nusage:\n qstat [-f] ...\n"
    unknown_x = "Unknown option: x\nUsage:\n    qstat [-a|-i|-r] ...\n"
    server = FakeServer(
        {
            "qstat -f -F json": ("", usage, 2),
            "qstat -f -x -F json": ("", usage, 2),
            "qstat -f": (SLURM_WRAPPER_QSTAT, "", 0),
            "qstat -f -x": ("", unknown_x, 2),
        }
    )
    backend.transport.run_script = server.run_script  # type: ignore[method-assign]
    result = backend.poll(["101", "102", "103"])
    assert len(server.scripts) == 3  # json, text, plain: found out once
    assert result.statuses["102"].state == JobState.RUNNING
    assert result.statuses["101"].state == JobState.UNKNOWN
    assert result.statuses["103"].state == JobState.UNKNOWN
    backend.poll(["102"])
    assert len(server.scripts) == 4 and server.scripts[-1].splitlines()[0] == "qstat -f"


def test_poll_raises_when_qstat_fails(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    server = FakeServer({"qstat -f -F json": ("", "qstat: cannot connect to server pbs (errno=111)\n", 1)})
    backend.transport.run_script = server.run_script  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="cannot connect"):
        backend.poll([])


def test_find_submitted(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    listing = fixture("20-final.qstat-fx.txt") + fixture("21-json-edge.qstat-fx.txt").replace(
        "GREETING=say hi C:\\\\\\\\temp dir", "SCRIPTHUT_TAG=sh-7-42-a1b2c3"
    )
    server = FakeServer(
        {"qstat -f -F json": ("", "qstat: invalid option -- 'F'\n", 2), "qstat -f -x": (listing, "", 0)}
    )
    backend.transport.run_script = server.run_script  # type: ignore[method-assign]
    assert backend.find_submitted(["sh-7-42-a1b2c3", "sh-0-0-000000"]) == {"sh-7-42-a1b2c3": "27.vm"}
    assert backend.find_submitted([]) == {}


def test_cancel_ignores_finished_and_unknown_jobs(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    server = FakeServer({"qdel": ("", fixture("15-qdel-mixed-unknown-finished.stderr.txt"), 35)})
    backend.transport.run_script = server.run_script  # type: ignore[method-assign]
    backend.cancel(["99998.vm", "3.vm", "7.vm"])
    assert server.scripts == ["qdel 99998.vm 3.vm 7.vm\n"]
    server.answers["qdel"] = ("", fixture("15-qdel-invalid-id.stderr.txt"), 1)
    with pytest.raises(BackendError, match="illegally formed"):
        backend.cancel(["not_a_job"])
    backend.cancel([])
    assert len(server.scripts) == 2


def test_cluster_info(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, queue="workq")
    output = (
        fixture("19-snapshot2.pbsnodes-av.txt")
        + "--qstat-B--\n"
        + fixture("20-final.qstat-Bf.txt")
        + "--du--\n2048\t/x\n"
    )
    backend.transport.run = lambda command, **kw: CommandResult(0, output, "")  # type: ignore[method-assign]
    info = backend.cluster_info()
    # Nodes in all, nodes free, CPUs in all, CPUs free: the one row for the whole server.
    (partition,) = info.partitions
    assert (partition.nodes, partition.state, partition.cpus_total, partition.cpus_idle) == (1, "1 free, 0 down", 8, 5)
    assert info.job_history is True and info.clone_dir_mb == 2.0
    assert info.to_json()["partitions"] == [
        {
            "partition": "workq",
            "default": True,
            "available": "up",
            "nodes": 1,
            "state": "1 free, 0 down",
            "cpus_allocated": 3,
            "cpus_idle": 5,
            "cpus_other": 0,
            "cpus_total": 8,
        }
    ]


def test_registered() -> None:
    assert adapter_class(Backend.Kind.PBS) is PbsAdapter
