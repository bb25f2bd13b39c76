"""EC2: a task's end is seen from its sentinel between two polls (``sentinels_every``), as
the SSH schedulers see theirs from end markers; against the AWS emulator (tests/aws_ec2.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import Run
from tests.aws_ec2 import Emulator, moto_ec2  # noqa: F401  (fixture)
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.test_ec2 import ec2  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.aws, pytest.mark.cluster]


def test_an_end_is_seen_from_the_sentinel_long_before_the_next_poll(user, ec2, cluster):  # noqa: F811
    """Before: a finished task's sentinel was read only by the poll (every poll_interval,
    its answer one poll later). With poll_interval 3600 the task still ends within
    seconds, the scheduler's poll having run once, and the reads between polls asked
    EC2 nothing until they found the end."""
    settings = validate_backend_settings("ec2", ec2.backend_settings(ssh_user=cluster.user, sentinels_every=1))
    backend = Backend.objects.create(name="aws-ec2", kind="ec2", settings=settings, poll_interval=3600)
    task = {"id": "quick", "name": "quick", "command": "echo quick done", "time_limit": "5:00"}
    run = create_run(owner=user, backend=backend, payload=[task], workflow_name="ec2-ends")
    tick_due_backends(force=True)  # the scheduler's poll (nothing yet), then the launch
    polled = Backend.objects.get(pk=backend.pk).last_polled_at
    calls = get_adapter(backend).calls  # type: ignore[attr-defined]
    described = calls["ec2:DescribeInstances"]
    deadline = time.monotonic() + 60
    while not run.is_finished:
        assert time.monotonic() < deadline, list(run.tasks.values_list("state", "reason"))
        ec2.host.boot()
        tick_due_backends()  # due backends only, as the ticker does
        run.refresh_from_db()
        time.sleep(0.2)
    done = run.tasks.get()
    assert (run.status, done.exit_code) == (Run.Status.COMPLETED, 0)
    assert "quick done" in Path(done.output_file).read_text()  # the log copied, as at a poll
    assert Backend.objects.get(pk=backend.pk).last_polled_at == polled, "the scheduler was polled again"
    assert calls["ssm:SendCommand"] >= 2 and calls["ssm:ListCommandInvocations"] >= 1
    assert calls["ec2:DescribeInstances"] == described + 1  # only the finished task's instance
    assert not ec2.instances("pending", "running")  # terminated once finished
