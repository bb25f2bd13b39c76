"""The AWS Batch backend through the engine, against moto's server over real HTTP.

Jobs stay SUBMITTED in the emulator until a test moves them (tests/aws.py), so each
test walks its jobs through RUNNING to an end as AWS Batch would, ticking in between.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.batch.adapter import BatchAdapter
from backends.config import validate_backend_settings
from backends.models import Backend, BatchJobDefinition
from backends.registry import close_all, get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.models import ApiToken, ObservedJob, Run, Task
from tests.aws import (
    IMAGE,
    BatchWorld,
    MotoServer,
    batch_world,
    finish_job,
    moto_job,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
    start_job,
    write_log,
)
from tests.services import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.aws]


def t(task_id: str, deps: tuple[str, ...] = (), **extra: object) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "command": f"echo {task_id}", "deps": list(deps), **extra}


@pytest.fixture
def world(moto_server: MotoServer) -> BatchWorld:
    return batch_world(moto_server)


@pytest.fixture(autouse=True)
def fresh_adapters() -> Any:
    close_all()
    yield
    close_all()


def make_backend(server: MotoServer, world: BatchWorld, name: str = "aws-batch", **keys: Any) -> Backend:
    settings: dict[str, Any] = {"aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": server.url}}
    settings.update(keys if keys else {"job_definition": world.job_definition})
    return Backend.objects.create(
        name=name, kind="batch", settings=validate_backend_settings("batch", settings), max_concurrent=100
    )


@pytest.fixture
def batch(moto_server: MotoServer, world: BatchWorld) -> Backend:
    return make_backend(moto_server, world)


def job_of(run: Run, task_id: str) -> str:
    job_id = run.tasks.get(task_id=task_id).job_id
    assert job_id, f"{task_id} has no job: {list(run.tasks.values_list('task_id', 'state', 'reason'))}"
    return job_id


def states(run: Run) -> dict[str, str]:
    return dict(run.tasks.values_list("task_id", "state"))


def run_through(server: MotoServer, run: Run, task_id: str, exit_code: int = 0) -> None:
    """Start and end a submitted task's job, ticking after each step."""
    job_id = job_of(run, task_id)
    start_job(server, job_id)
    tick_due_backends(force=True)
    assert run.tasks.get(task_id=task_id).state == Task.State.RUNNING
    finish_job(job_id, exit_code)
    tick_due_backends(force=True)


def test_workflow_with_dependencies_completes(user: User, moto_server: MotoServer, batch: Backend) -> None:
    tasks = [t("prep", env_vars={"SECRET_TOKEN": "s3cr3t value"}), t("sim.1", ("prep",)), t("sim.2", ("prep",)), t("final", ("sim.*",))]  # fmt: skip  # noqa: E501
    run = create_run(owner=user, backend=batch, payload=tasks, workflow_name="chain")
    tick_due_backends(force=True)
    assert states(run) == {"prep": "submitted", "sim.1": "pending", "sim.2": "pending", "final": "pending"}
    prep = run.tasks.get(task_id="prep")
    job = moto_job(prep.job_id)
    # Named and tagged with the task's tag; the script as bash -c; env through the API only.
    assert job.job_name.startswith(prep.submit_tag + "_prep")
    assert job.container_overrides["command"] == ["bash", "-c", prep.script]
    env = {e["name"]: e["value"] for e in job.container_overrides["environment"]}
    assert env["SECRET_TOKEN"] == "s3cr3t value" and env["SCRIPTHUT_RUN_ID"] == run.pk
    assert "s3cr3t" not in prep.script and "SECRET_TOKEN" in prep.script
    assert {"type": "MEMORY", "value": "4096"} in job.container_overrides["resourceRequirements"]
    assert job.timeout == {"attemptDurationSeconds": 3600}
    tick_due_backends(force=True)
    prep.refresh_from_db()
    assert prep.state == "submitted" and prep.reason == "SUBMITTED"  # queued, the Batch status as the reason
    run_through(moto_server, run, "prep")
    assert states(run)["sim.1"] == "submitted" and states(run)["sim.2"] == "submitted"
    for task_id in ("sim.1", "sim.2"):
        run_through(moto_server, run, task_id)
    run_through(moto_server, run, "final")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, states(run)
    final = run.tasks.get(task_id="final")
    assert final.exit_code == 0 and final.elapsed_seconds is not None and final.started_at is not None


def test_failed_job_has_its_exit_code_and_dependents_are_dep_failed(
    user: User, moto_server: MotoServer, batch: Backend
) -> None:
    run = create_run(owner=user, backend=batch, payload=[t("a"), t("b", ("a",))], workflow_name="fail")
    tick_due_backends(force=True)
    job_id = job_of(run, "a")
    start_job(moto_server, job_id)
    finish_job(job_id, 3, reason="Essential container in task exited")
    tick_due_backends(force=True)
    a = run.tasks.get(task_id="a")
    assert a.state == Task.State.FAILED and a.exit_code == 3
    assert "Essential container in task exited" in a.reason
    assert run.tasks.get(task_id="b").state == Task.State.DEP_FAILED
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED


def test_cancel_uses_cancel_job_before_start_and_terminate_job_after(
    user: User, moto_server: MotoServer, batch: Backend
) -> None:
    run = create_run(owner=user, backend=batch, payload=[t("queued"), t("started")], workflow_name="cancel")
    tick_due_backends(force=True)
    started = job_of(run, "started")
    start_job(moto_server, started)
    tick_due_backends(force=True)
    cancel_run(run, by=user)
    tick_due_backends(force=True)
    assert states(run) == {"queued": "cancelled", "started": "cancelled"}
    for task_id in ("queued", "started"):
        job = moto_job(job_of(run, task_id))
        # The emulator's cancel_job ignores a started job: only terminate_job stops it.
        assert job.stop, task_id
        assert job.job_stopped_reason == f"Cancelled in ScriptHut: run {run.pk} cancelled by {user.username}"


def test_logs_follow_a_running_job(user: User, moto_server: MotoServer, batch: Backend) -> None:
    run = create_run(owner=user, backend=batch, payload=[t("talk")], workflow_name="logs")
    tick_due_backends(force=True)
    task = run.tasks.get(task_id="talk")
    client = Client()
    client.force_login(user)
    before = client.get(f"/runs/{run.pk}/tasks/talk/logs/output").content.decode()
    assert "has not been written yet" in before
    stream = start_job(moto_server, task.job_id, ("line 1", "line 2"))
    tick_due_backends(force=True)
    page = client.get(f"/runs/{run.pk}/tasks/talk/logs/output").content.decode()
    assert "line 1\nline 2" in page and stream in page
    write_log(moto_server, stream, ("line 3",))
    page = client.get(f"/runs/{run.pk}/tasks/talk/logs/output", headers={"HX-Request": "true"}).content.decode()
    assert "line 1\nline 2\nline 3" in page and "every 3s" in page  # still followed
    error_tab = client.get(f"/runs/{run.pk}/tasks/talk/logs/error").content.decode()
    assert "both are in the output tab" in error_tab


def test_log_tail_keeps_the_last_bytes_across_pages(user: User, moto_server: MotoServer, batch: Backend) -> None:
    run = create_run(owner=user, backend=batch, payload=[t("big")], workflow_name="big")
    tick_due_backends(force=True)
    task = run.tasks.get(task_id="big")
    stream = start_job(moto_server, task.job_id)
    for chunk in range(6):  # 6 x 2,000 lines of ~40 bytes: several pages, 480 KB
        write_log(moto_server, stream, tuple(f"chunk {chunk} line {n:05d} {'x' * 20}" for n in range(2000)))
    adapter = get_adapter(batch)
    from runs.engine.jobspec import task_log

    text = adapter.read_log(task_log(task, "output"), 64 * 1024)
    assert len(text.encode()) <= 64 * 1024 and text.endswith(f"chunk 5 line 01999 {'x' * 20}\n")


def test_locked_definition_warns_about_a_task_image(user: User, moto_server: MotoServer, batch: Backend) -> None:
    payload = [t("same", image=IMAGE), t("other", image="python:3.13")]
    run = create_run(owner=user, backend=batch, payload=payload, workflow_name="locked")
    tick_due_backends(force=True)
    other, same = run.tasks.get(task_id="other"), run.tasks.get(task_id="same")
    assert same.warning == ""
    assert "'python:3.13' ignored" in other.warning and "locked" in other.warning
    # Submitted against the configured definition verbatim; nothing registered.
    assert moto_job(other.job_id).job_definition.name == "scripthut-template"
    definitions = moto_server.client("batch").describe_job_definitions()["jobDefinitions"]
    assert len(definitions) == 1
    client = Client()
    client.force_login(user)
    assert "locked to" in client.get(f"/runs/{run.pk}/tasks/other/script").content.decode()
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    tasks = {t["id"]: t for t in api.get(f"/api/runs/{run.pk}").json()["tasks"]}
    assert tasks["other"]["warning"] == other.warning and tasks["same"]["warning"] == ""


def test_revisions_mode_registers_once_per_image_even_after_a_restart(
    user: User, moto_server: MotoServer, world: BatchWorld
) -> None:
    backend = make_backend(moto_server, world, job_definition=world.job_definition, job_definition_mode="revisions")
    payload = [t("a", image="python:3.13"), t("b", image="python:3.13"), t("c")]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="revisions")
    tick_due_backends(force=True)
    batch_api = moto_server.client("batch")
    revisions = batch_api.describe_job_definitions(jobDefinitionName="scripthut-template")["jobDefinitions"]
    assert sorted(d["revision"] for d in revisions) == [1, 2]
    new = next(d for d in revisions if d["revision"] == 2)
    template = next(d for d in revisions if d["revision"] == 1)
    assert new["containerProperties"]["image"] == "python:3.13"
    for key in ("jobRoleArn", "logConfiguration"):
        assert new["containerProperties"][key] == template["containerProperties"][key]
    assert new["retryStrategy"] == {"attempts": 2}
    assert new["tags"] == {"team": "research", "scripthut:revision-of": template["jobDefinitionArn"]}
    assert moto_job(job_of(run, "a")).job_definition.revision == 2
    assert moto_job(job_of(run, "b")).job_definition.revision == 2
    assert moto_job(job_of(run, "c")).job_definition.revision == 1  # no image: the template
    assert BatchJobDefinition.objects.filter(backend=backend).count() == 1
    close_all()  # a restart: a new adapter with an empty memory
    payload = [t("d", image="python:3.13"), t("e")]
    again = create_run(owner=user, backend=backend, payload=payload, workflow_name="again")
    tick_due_backends(force=True)
    assert moto_job(job_of(again, "d")).job_definition.revision == 2
    # A task without an image still gets the template, not the newest revision.
    assert moto_job(job_of(again, "e")).job_definition.revision == 1
    revisions = batch_api.describe_job_definitions(jobDefinitionName="scripthut-template")["jobDefinitions"]
    assert len(revisions) == 2


def test_default_image_auto_registers_one_definition_per_image(
    user: User, moto_server: MotoServer, world: BatchWorld
) -> None:
    backend = make_backend(
        moto_server, world, default_image=IMAGE, job_role_arn="arn:aws:iam::123456789012:role/job-role"
    )
    payload = [t("a"), t("b"), t("c", image="python:3.13")]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="auto")
    tick_due_backends(force=True)
    definitions = {
        d["jobDefinitionName"]: d
        for d in moto_server.client("batch").describe_job_definitions()["jobDefinitions"]
        if d["jobDefinitionName"].startswith("scripthut-") and d["jobDefinitionName"] != "scripthut-template"
    }
    assert len(definitions) == 2
    images = {d["containerProperties"]["image"] for d in definitions.values()}
    assert images == {IMAGE, "python:3.13"}
    assert all(d["containerProperties"]["jobRoleArn"].endswith("role/job-role") for d in definitions.values())
    # The queue runs on Fargate: so must the definitions.
    assert all(d["platformCapabilities"] == ["FARGATE"] for d in definitions.values())
    assert moto_job(job_of(run, "a")).job_definition.arn == moto_job(job_of(run, "b")).job_definition.arn


def test_jobs_others_submitted_are_external(
    user: User, moto_server: MotoServer, world: BatchWorld, batch: Backend
) -> None:  # noqa: E501
    other = moto_server.client("batch").submit_job(
        jobName="someone-elses", jobQueue=world.queue, jobDefinition=world.job_definition
    )["jobId"]
    run = create_run(owner=user, backend=batch, payload=[t("mine")], workflow_name="mine")
    tick_due_backends(force=True)
    tick_due_backends(force=True)
    observed = {o.job_id: o for o in ObservedJob.objects.filter(backend=batch)}
    assert observed[other].our_task_id is None and observed[other].name == "someone-elses"
    assert observed[other].state == "queued" and observed[other].partition == world.queue
    assert observed[job_of(run, "mine")].our_task_id == run.tasks.get(task_id="mine").pk


def test_aws_endpoint_url_environment_variable_is_honoured(
    user: User, moto_server: MotoServer, world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"aws": {"region": "us-east-1", "job_queue": world.queue}, "job_definition": world.job_definition}
    backend = Backend.objects.create(name="env", kind="batch", settings=validate_backend_settings("batch", settings))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    run = create_run(owner=user, backend=backend, payload=[t("a")], workflow_name="env")
    tick_due_backends(force=True)
    assert moto_job(job_of(run, "a")).job_queue.name == world.queue


def test_interrupted_submit_is_reconciled_not_sent_twice(
    user: User, moto_server: MotoServer, batch: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runs.engine.submit as submit

    def die(*args: object) -> None:
        raise RuntimeError("worker died after the submit call")

    monkeypatch.setattr(submit, "apply_results", die)
    run = create_run(owner=user, backend=batch, payload=[t("a"), t("b")], workflow_name="crash")
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"submitting"}
    monkeypatch.undo()
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"submitted"}
    jobs = moto_server.client("batch").list_jobs(jobQueue=batch.settings["aws"]["job_queue"], jobStatus="SUBMITTED")
    assert len(jobs["jobSummaryList"]) == 2
    assert {job_of(run, "a"), job_of(run, "b")} == {j["jobId"] for j in jobs["jobSummaryList"]}


def test_poll_describes_jobs_in_calls_of_100(moto_server: MotoServer, world: BatchWorld, batch: Backend) -> None:
    client = moto_server.client("batch")
    ids = [
        client.submit_job(jobName=f"j{i}", jobQueue=world.queue, jobDefinition=world.job_definition)["jobId"]
        for i in range(250)
    ]
    adapter = get_adapter(batch)
    assert isinstance(adapter, BatchAdapter)
    calls: list[tuple[str, int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(("DescribeJobs", len(params.get("jobs", []))))

    adapter.batch.meta.events.register("provide-client-params.batch.DescribeJobs", record)
    result = adapter.poll(ids)
    assert calls == [("DescribeJobs", 100), ("DescribeJobs", 100), ("DescribeJobs", 50)]
    assert {s.state for s in result.statuses.values()} == {"queued"}


class LosesSubmitAnswers(BaseHTTPRequestHandler):
    """Forwards every call to the emulator; a submit_job is forwarded (the job is created)
    but its answer never comes back: the connection is closed instead."""

    upstream = ""

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310  (the emulator on loopback)
                status, answer_headers, payload = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, payload = error.code, error.headers, error.read()
        if self.path.startswith("/v1/submitjob"):
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in answer_headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_a_lost_submit_answer_is_reconciled_not_sent_twice(
    user: User, moto_server: MotoServer, world: BatchWorld
) -> None:
    handler = type("Handler", (LosesSubmitAnswers,), {"upstream": moto_server.url})
    proxy = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        lossy = make_backend(MotoServer(f"http://127.0.0.1:{proxy.server_address[1]}"), world)
        run = create_run(owner=user, backend=lossy, payload=[t("a"), t("b")], workflow_name="lossy")
        tick_due_backends(force=True)
        assert set(states(run).values()) == {"submitting"}  # sent, answers lost: neither failed nor re-queued
    finally:
        proxy.shutdown()
        proxy.server_close()
    settings = {**lossy.settings, "aws": {**lossy.settings["aws"], "endpoint_url": moto_server.url}}
    Backend.objects.filter(pk=lossy.pk).update(settings=settings)
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"submitted"}
    jobs = moto_server.client("batch").list_jobs(jobQueue=world.queue, jobStatus="SUBMITTED")["jobSummaryList"]
    assert sorted(j["jobId"] for j in jobs) == sorted([job_of(run, "a"), job_of(run, "b")])


def test_a_task_queue_that_does_not_exist_holds_only_that_task(
    user: User, moto_server: MotoServer, batch: Backend
) -> None:
    run = create_run(
        owner=user, backend=batch, payload=[t("ok"), t("lost", partition="no-such-queue")], workflow_name="q"
    )  # noqa: E501
    tick_due_backends(force=True)
    assert states(run) == {"ok": "submitted", "lost": "pending"}
    reason = run.tasks.get(task_id="lost").reason
    assert reason == "submission deferred: job queue 'no-such-queue' does not exist in us-east-1"
    batch.refresh_from_db()
    assert batch.status == Backend.Status.OK


def test_dashboard_shows_the_queue_vcpus(
    user: User, moto_server: MotoServer, world: BatchWorld, batch: Backend
) -> None:  # noqa: E501
    tick_due_backends(force=True)
    batch.refresh_from_db()
    (queue,) = batch.cluster_info["partitions"]
    assert (queue["partition"], queue["default"], queue["available"], queue["cpus_total"]) == (
        world.queue,
        True,
        "up",
        64,
    )  # noqa: E501


def test_queued_reasons_follow_the_batch_status(user: User, moto_server: MotoServer, batch: Backend) -> None:
    def state_manager(action: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{moto_server.url}/moto-api/state-manager/{action}", data=json.dumps(body).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10)  # noqa: S310  (the emulator on loopback)

    # The emulator walks SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING, a step a second.
    transition = {"progression": "time", "seconds": 1}
    state_manager("set-transition", {"model_name": "batch::job", "transition": transition})
    try:
        run = create_run(owner=user, backend=batch, payload=[t("a")], workflow_name="walk")
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not seen or seen[-1][0] != "running"):
            tick_due_backends(force=True)
            seen.append(run.tasks.values_list("state", "reason").get())
            time.sleep(0.3)
    finally:
        state_manager("unset-transition", {"model_name": "batch::job"})
    reasons = [reason for state, reason in seen if state == "submitted"]
    assert {"PENDING", "RUNNABLE", "STARTING"} <= set(reasons), seen
    assert seen[-1] == ("running", "")
