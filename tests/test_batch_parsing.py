"""Reading AWS Batch job descriptions and writing jobs: no emulator needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.base import JobSpec, JobState
from backends.batch import parsing, rendering

FIXTURE = Path(__file__).parent.parent / "backends" / "batch" / "fixtures" / "describe_jobs.json"


def test_describe_jobs_answers_map_to_engine_states() -> None:
    jobs = json.loads(FIXTURE.read_text())["jobs"]
    runnable, running, succeeded, oom, cancelled = (parsing.job_status(job) for job in jobs)
    assert runnable.state == JobState.QUEUED and runnable.reason.startswith("RUNNABLE: MISCONFIGURATION")
    assert (runnable.cpus, runnable.partition, runnable.tag) == (4, "research", "sh-ab12cd34-7-0a1b2c")
    assert (
        running.state == JobState.RUNNING and running.started_at is not None and running.tag == "sh-ab12cd34-8-3d4e5f"
    )
    assert (succeeded.state, succeeded.exit_code, succeeded.elapsed_seconds) == (JobState.COMPLETED, 0, 60.0)
    assert (oom.state, oom.exit_code, oom.out_of_memory) == (JobState.FAILED, 137, True)
    assert "OutOfMemoryError" in oom.reason and not oom.never_started
    assert cancelled.state == JobState.CANCELLED and cancelled.never_started


def job(**extra: object) -> JobSpec:
    fields: dict[str, object] = {"tag": "sh-r-1-abc", "run_id": "r", "task_id": "t", "name": "T 1", "command": "run"}
    return JobSpec(**{**fields, **extra})  # type: ignore[arg-type]


def test_submit_arguments_follow_the_spec_table() -> None:
    spec = job(cpus=4, memory="2G", time_limit="59", gres="gpu:a100:2", partition="gpu-queue", env={"A": "x y"})
    arguments = rendering.submit_arguments(spec, "script", "def:1", rendering.job_queue(spec, "default"), 3)
    assert arguments["jobName"] == "sh-r-1-abc_T_1" and arguments["jobQueue"] == "gpu-queue"
    assert arguments["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "4"},
        {"type": "MEMORY", "value": "2048"},
        {"type": "GPU", "value": "2"},
    ]
    assert arguments["timeout"] == {"attemptDurationSeconds": 59 * 60}  # "59": minutes, as in Slurm
    assert arguments["retryStrategy"] == {"attempts": 3}
    assert arguments["containerOverrides"]["environment"] == [{"name": "A", "value": "x y"}]
    odd = rendering.submit_arguments(job(task_id="sim[1]#ü"), "s", "d", "q", 1)
    assert odd["tags"]["scripthut:task"] == "sim_1__ü"


def test_timeout_is_omitted_under_a_minute_and_the_default_partition_uses_the_queue() -> None:
    short = job(time_limit="0:59")
    assert "timeout" not in rendering.submit_arguments(short, "s", "d", "q", 1)
    assert rendering.submit_arguments(job(time_limit="1:00"), "s", "d", "q", 1)["timeout"] == {
        "attemptDurationSeconds": 60
    }
    assert rendering.job_queue(job(), "default") == "default"  # partition "normal": not set


def test_script_lists_variable_names_never_values_and_refuses_other_gres() -> None:
    script = rendering.render(job(env={"TOKEN": "s3cr3t"}))
    assert "TOKEN" in script and "s3cr3t" not in script
    with pytest.raises(ValueError, match="only takes GPUs"):
        rendering.render(job(gres="license:matlab:1"))


def test_a_request_botocore_refuses_is_an_error_not_a_wait() -> None:
    """Nothing is sent (a closed port), so only botocore's own check can answer."""
    import boto3

    from backends.aws.clients import aws_errors
    from backends.base import BackendError

    client = boto3.client(
        "batch",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        endpoint_url="http://127.0.0.1:9",
    )
    with pytest.raises(
        BackendError, match='SubmitJob: Parameter validation failed:\nUnknown parameter in containerOverrides: "bogus"'
    ):  # noqa: E501
        with aws_errors("SubmitJob"):
            client.submit_job(jobName="x", jobQueue="q", jobDefinition="d", containerOverrides={"bogus": 1})
