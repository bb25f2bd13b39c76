"""Job arrays on the real one-node Slurm cluster (tests/setup/cluster.sh), through the engine.

A run's ready tasks of one shape go as one ``sbatch --array``; each task keeps its own job
id (``<array>_<index>``), state, exit code, log and dependents.
"""

from __future__ import annotations

import pytest

from backends.config import validate_backend_settings
from backends.models import Backend
from runs.actions import create_run
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.test_slurm import states, t, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]


@pytest.fixture
def slurm(cluster: Cluster) -> Backend:  # noqa: F811
    settings = validate_backend_settings("slurm", {"ssh": cluster.ssh_settings(), "account": cluster.account})
    return Backend.objects.create(name="slurm", kind="slurm", settings=settings, max_concurrent=100, poll_interval=1)


def test_dbg(user, slurm):
    tasks = [t("bad", "sleep 1; exit 3"), t("child", deps=("bad",)), t("ok")]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="fail"))
    for x in run.tasks.all():
        print(x.task_id, x.state, x.job_id, x.submit_tag, x.reason, x.exit_code, x.native_deps)
    print(run.tasks.get(task_id="bad").script)
    print(states(run))
    assert 0
