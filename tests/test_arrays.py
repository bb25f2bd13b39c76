"""Job arrays without a scheduler: the dispatcher script run by real bash, the submit
batch's array lines, site limits and array ids parsed from recorded output (Slurm 22.05 of
the test cluster, OpenPBS 23.06 fixtures), and the engine's grouping stored before submit.

The same on the real Slurm end to end: tests/test_slurm_arrays.py and the kill test in
tests/test_faults.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends.base import JobSpec, JobState, SubmitLimits, TaskLog
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.pbs.adapter import PbsAdapter
from backends.pbs.parsing import parse_qstat_json, parse_qsub
from backends.slurm.adapter import SlurmAdapter
from backends.slurm.parsing import parse_scontrol, parse_site_limits
from runs.actions import create_run
from runs.engine.arrays import form_arrays
from runs.engine.claim import claim_ready
from runs.models import Task

PBS_FIXTURES = Path(__file__).parent.parent / "backends" / "pbs" / "fixtures"


def slurm(tmp_path: Path, **settings: object) -> SlurmAdapter:
    values = validate_backend_settings("slurm", {"ssh": {"host": "login.example"}, "log_dir": "/logs", **settings})
    return SlurmAdapter(Backend(name="slurm", kind="slurm", settings=values), tmp_path)


def pbs(tmp_path: Path, **settings: object) -> PbsAdapter:
    values = validate_backend_settings("pbs", {"ssh": {"host": "pbs.example"}, "log_dir": "/logs", **settings})
    return PbsAdapter(Backend(name="pbs", kind="pbs", settings=values), tmp_path)


def spec(task_id: str, command: str, **fields: object) -> JobSpec:
    values: dict[str, object] = {"tag": f"sh-r1-{task_id}-abc", "run_id": "r1", "task_id": task_id, "name": task_id}
    values |= {"command": command, "working_dir": "/tmp", "time_limit": "5:00"}
    job = JobSpec(**(values | fields))  # type: ignore[arg-type]
    return job


def elements(adapter: SlurmAdapter | PbsAdapter, jobs: list[JobSpec]) -> list[JobSpec]:
    out = []
    for index, job in enumerate(jobs):
        job.output_file = adapter.default_log_path(job, "out")
        job.error_file = adapter.default_log_path(job, "err")
        out.append(adapter.as_array_element(job, "sh-r1-a9-f00", index))
    return out


def run_element(script: str, variable: str, index: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "array.sh"
    path.write_text(script)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), variable: index}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=30, check=False)


def test_each_element_runs_its_own_task_with_every_value_quoted(tmp_path):
    adapter = slurm(tmp_path)
    marker = tmp_path / "pwned"
    nasty = f'it\'s "$(touch {marker})" `touch {marker}` SCRIPTHUT_x'
    jobs = elements(
        adapter,
        [
            spec("a", 'echo "a $X"', env={"X": nasty}),
            spec("b", "echo b; exit 4"),
            spec("c", "if then fi"),  # a syntax error: this element fails, and only this one
            spec("d", 'printf "%s\\n" "$SCRIPTHUT_TAG_OF_D"', env={"SCRIPTHUT_TAG_OF_D": "d's"}),
        ],
    )
    assert len({adapter.array_shape(job) for job in jobs}) == 1
    script = adapter.array_script(jobs)
    assert script.count("#SBATCH --job-name=") == 1 and "#SBATCH --output=/logs/r1/%A_%a.out" in script
    a = run_element(script, "SLURM_ARRAY_TASK_ID", "0", tmp_path)
    assert (a.returncode, a.stdout) == (0, f"a {nasty}\n")
    b = run_element(script, "SLURM_ARRAY_TASK_ID", "1", tmp_path)
    assert (b.returncode, b.stdout) == (4, "b\n")
    c = run_element(script, "SLURM_ARRAY_TASK_ID", "2", tmp_path)
    assert c.returncode != 0 and c.stdout == ""
    d = run_element(script, "SLURM_ARRAY_TASK_ID", "3", tmp_path)
    assert (d.returncode, d.stdout) == (0, "d's\n")
    unknown = run_element(script, "SLURM_ARRAY_TASK_ID", "9", tmp_path)
    assert unknown.returncode == 1 and "no task for array index 9" in unknown.stderr
    assert not marker.exists()


def test_the_submit_batch_sends_one_array_and_names_each_element(tmp_path):
    adapter = slurm(tmp_path)
    jobs = elements(adapter, [spec(x, "true") for x in "abc"])
    plain = spec("p", "true", output_file="/logs/p.out", error_file="/logs/p.err")
    child = spec("child", "true", output_file="/logs/c.out", error_file="/logs/c.err", after_tags=[jobs[1].tag])
    batch = adapter.submit_script([(j, adapter.render_script(j)) for j in [*jobs, plain, child]])
    assert batch.count("_sh_submit sh-r1-a9-f00 sbatch --parsable --array=0-2%3 <<") == 1
    assert batch.count("sbatch --parsable") == 3  # the array, the plain job, the child
    assert "jid_1=${_sh_last:+${_sh_last%%;*}_1}" in batch
    assert '--dependency=afterok:"${jid_1}"' in batch  # the child waits on its parent's element
    assert [j.tag for j in jobs] == ["sh-r1-a9-f00_0", "sh-r1-a9-f00_1", "sh-r1-a9-f00_2"]
    assert adapter.element_job_id("77", 2) == "77_2" and adapter.array_job_id("77_[3-5]") == "77"
    log = TaskLog(job_id="77_2", stream="output", path=jobs[2].output_file, working_dir="/tmp")
    assert adapter.log_location(log) == "/logs/r1/77_2.out"


def test_shapes_differ_by_resources_init_and_named_logs_but_not_by_command_or_env(tmp_path):
    adapter = slurm(tmp_path)
    base = elements(adapter, [spec("a", "true")])[0]
    shape = adapter.array_shape(base)
    same = elements(adapter, [spec("b", "false", env={"A": "1"}, working_dir="/var")])[0]
    assert adapter.array_shape(same) == shape
    for other in (
        spec("c", "true", cpus=2),
        spec("d", "true", memory="8G"),
        spec("e", "true", time_limit="9:00"),
        spec("f", "true", gres="gpu:1"),
        spec("g", "true", partition="big"),
        spec("h", "true", extra_init="module load x"),
    ):
        assert adapter.array_shape(elements(adapter, [other])[0]) != shape, other
    named = spec("i", "true", output_file="/mine/i.out", error_file="/mine/i.err")
    assert adapter.array_shape(named) != shape
    assert adapter.array_shape(spec("j", "true", after_job_ids=["5"])) is None  # held jobs go plain
    assert slurm(tmp_path, arrays=False).array_shape(base) is None


def test_site_limits_are_read_from_scontrol_and_sacctmgr():
    config = "AccountingStorageEnforce = associations,limits,qos\nMaxArraySize            = 1001\n"
    assoc = "--assoc--\nresearch|1000|normal|\nother|50|normal|\n"
    qos = "--qos--\nnormal|800\nhigh|\n"
    assert parse_site_limits(config + assoc + qos, account="research") == type(parse_site_limits(""))(1001, 800)
    assert parse_site_limits(config + "--assoc--\nresearch|||\n--qos--\nnormal|\n").max_submit_jobs is None
    assert parse_site_limits(config + assoc + qos).max_submit_jobs == 50  # any account: the smallest
    off = "AccountingStorageEnforce = associations\nMaxArraySize            = 5000\n" + assoc + qos
    assert (parse_site_limits(off).max_array_size, parse_site_limits(off).max_submit_jobs) == (5000, None)
    limits = SubmitLimits(max_queued=1000, queued=990, limit_name="MaxSubmitJobs")
    assert limits.room == 10 and limits.waiting_reason(10) == "1,000 jobs queued of MaxSubmitJobs 1,000"


def test_scontrol_names_array_elements_as_squeue_and_sacct_do():
    # Recorded on the test cluster (Slurm 22.05): element 1 of array 7 is job 9.
    line = (
        "JobId=9 ArrayJobId=7 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=x@tagA UserId=hut(1001) "
        "GroupId=hut(1001) JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 RunTime=00:00:02 "
        "SubmitTime=2026-12-05T22:48:01 StartTime=2026-12-05T22:48:01 EndTime=2026-12-05T22:48:03 NodeList=vm"
    )
    status = parse_scontrol(line)["7_1"]
    assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 1, "exit code 1")


def test_pbs_arrays_on_recorded_openpbs_output(tmp_path):
    adapter = pbs(tmp_path, arrays=True)
    array_id = parse_qsub((PBS_FIXTURES / "07-array.qsub.txt").read_text())
    assert array_id == "9[].vm"
    assert adapter.element_job_id(array_id, 1) == "9[1].vm" and adapter.array_job_id("9[1].vm") == "9[].vm"
    subjob = parse_qstat_json((PBS_FIXTURES / "07-array.qstat-fx-json-subjob1.txt").read_text())["9[1].vm"]
    assert (subjob.state, subjob.exit_code) == (JobState.COMPLETED, 0)
    mixed = parse_qstat_json((PBS_FIXTURES / "07b-array-mixed.qstat-fxt-json.txt").read_text())
    assert (mixed["22[2].vm"].state, mixed["22[2].vm"].exit_code) == (JobState.FAILED, 2)
    assert mixed["22[1].vm"].state == JobState.COMPLETED
    jobs = elements(adapter, [spec("a", "echo a"), spec("b", "echo b; exit 2")])
    script = adapter.array_script(jobs)
    assert '#PBS -o "/logs/r1/sh-r1-a9-f00.^array_index^.out"' in script
    assert "# scripthut-tag: sh-r1-a9-f00" in script
    b = run_element(script, "PBS_ARRAY_INDEX", "1", tmp_path)
    assert (b.returncode, b.stdout) == (2, "b\n")
    batch = adapter.submit_script([(j, adapter.render_script(j)) for j in jobs])
    assert "-J 0-1" in batch and "SCRIPTHUT_TAG=sh-r1-a9-f00 -J" in batch
    assert "jid_1=${_sh_last:+${_sh_last/\\[\\]/[1]}}" in batch
    log = TaskLog(job_id="9[1].vm", stream="output", path=jobs[1].output_file, working_dir="/tmp")
    assert adapter.log_location(log) == "/logs/r1/sh-r1-a9-f00.1.out"
    assert pbs(tmp_path).array_shape(jobs[0]) is None  # off unless the server is OpenPBS / PBS Pro


@pytest.mark.django_db
def test_the_engine_groups_a_runs_tasks_and_stores_each_element_before_submitting(user, tmp_path):
    """Five ready tasks of one shape and one of another, MaxArraySize 2: arrays of 2 and 2,
    and the fifth and the other one go plain; tags, scripts and logs are stored first."""
    settings = validate_backend_settings("slurm", {"ssh": {"host": "login.example"}, "log_dir": "/logs"})
    backend = Backend.objects.create(name="s", kind="slurm", settings=settings, max_concurrent=10)
    adapter = SlurmAdapter(backend, tmp_path)
    payload: list[dict[str, object]] = [
        {"id": f"t{i}", "name": f"t{i}", "command": "true", "working_dir": "/tmp"} for i in range(5)
    ]
    payload.append({"id": "big", "name": "big", "command": "true", "working_dir": "/tmp", "cpus": 4})
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="w")
    claimed = claim_ready(run, 10, adapter, {})
    batch = form_arrays(claimed, adapter, max_array_size=2)
    tags = [spec.tag for _, spec, _ in batch]
    array_tags = [spec.array_tag for _, spec, _ in batch]
    assert array_tags[0] == array_tags[1] != array_tags[2] == array_tags[3] and array_tags[0] and array_tags[2]
    assert [spec.array_index for _, spec, _ in batch[:4]] == [0, 1, 0, 1]
    assert array_tags[4:] == ["", ""]
    stored = dict(Task.objects.filter(run=run).values_list("submit_tag", "state"))
    assert stored == {tag: "submitting" for tag in tags}
    first = Task.objects.get(run=run, task_id="t0")
    assert first.output_file == f"/logs/{run.pk}/%A_%a.out" and "--job-name=t0@" in first.script
    assert "%A_%a" not in Task.objects.get(run=run, task_id="t4").output_file  # a shape of one stays plain


def test_a_job_dropped_on_a_failed_elements_dependency_never_started():
    """Seen on the test cluster: a job held on afterok:<array>_<index> whose element failed is
    cancelled by Slurm with a start time equal to its end (sacct, scontrol, squeue alike); it
    never ran, so its task is dep_failed, not cancelled."""
    from backends.slurm.parsing import parse_sacct, parse_squeue

    sacct = (
        "270|CANCELLED|0:0|00:00:00|00:00:00|0||4G|2026-12-05T22:58:33|2026-12-05T22:58:34|"
        "2026-12-05T22:58:34|None assigned|Dependency|child@sh-5ac2ec7e-6-4c518c"
    )
    scontrol = (
        "JobId=8700 JobName=child@sh-42dc81fd-8-541245 UserId=hut(1001) JobState=CANCELLED "
        "Reason=DependencyNeverSatisfied Dependency=afterok:8699_0(failed) ExitCode=0:0 RunTime=00:00:00 "
        "SubmitTime=2026-12-05T23:44:24 StartTime=2026-12-05T23:44:26 EndTime=2026-12-05T23:44:26"
    )
    squeue = "8700|hut|CANCELLED|DependencyNeverSatisfied|normal|1||2026-12-05T23:44:24|2026-12-05T23:44:26|child@x"
    assert parse_sacct(sacct)["270"].never_started
    assert parse_scontrol(scontrol)["8700"].never_started
    assert parse_squeue(squeue)[0].never_started
