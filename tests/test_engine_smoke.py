import pytest

from runs.engine import create_run


@pytest.mark.django_db(transaction=True)
def test_chain_completes(user, local_backend, run_to_end):
    tasks = [
        {"id": "setup.a", "name": "Setup", "command": "echo setup"},
        {"id": "sim.1", "name": "S1", "command": "echo $SCRIPTHUT_RUN_ID", "deps": ["setup.*"]},
        {"id": "sim.2", "name": "S2", "command": "true", "deps": ["setup.*"]},
        {"id": "final", "name": "F", "command": "true", "deps": ["sim.*"]},
    ]
    run = create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="t")
    run = run_to_end(run)
    assert run.status == "completed", list(run.tasks.values_list("task_id", "state", "reason"))
