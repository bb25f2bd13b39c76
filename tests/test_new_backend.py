"""A new backend is one package plus one registry line: a kind registered only here
(tests/toy_backend) is taken by the config import, the admin and the engine, with no
migration; an unknown kind is refused everywhere with the known ones named."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from backends import registry
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import BACKENDS, BackendKind
from runs.actions import create_run
from runs.models import Run
from scripthut_site.config import import_config
from scripthut_site.config_schema import ConfigError

TOY = BackendKind("tests.toy_backend", "Toy scheduler")


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(BACKENDS, "toy", TOY)  # the one registry line
    yield
    registry.close_all()


def toy_config(job_dir: Path) -> str:
    return f"backends:\n  - name: toys\n    type: toy\n    job_dir: {job_dir}\n"


@pytest.mark.usefixtures("toy_registered")
def test_a_registered_kind_is_imported_and_runs_through_the_engine(
    db: None, user: User, tmp_path: Path, run_to_end: Callable[..., Run]
) -> None:
    report = import_config(toy_config(tmp_path / "jobs"))
    assert report.created["backends"] == 1
    backend = Backend.objects.get(name="toys")
    backend.full_clean()
    assert (backend.kind, backend.get_kind_display()) == ("toy", "Toy scheduler")
    assert backend.settings["job_dir"] == str(tmp_path / "jobs")

    tasks = [
        {"id": "hello", "name": "hello", "command": "echo hello from the toy", "working_dir": str(tmp_path)},
        {"id": "after", "name": "after", "command": "exit 3", "deps": ["hello"], "working_dir": str(tmp_path)},
    ]
    run = run_to_end(create_run(owner=user, backend=backend, payload=tasks, workflow_name="toy"))
    assert dict(run.tasks.values_list("task_id", "state")) == {"hello": "completed", "after": "failed"}
    hello = run.tasks.get(task_id="hello")
    assert hello.job_id.startswith("toy-") and hello.exit_code == 0
    assert run.tasks.get(task_id="after").exit_code == 3


@pytest.mark.usefixtures("toy_registered")
def test_a_registered_kind_needs_no_migration(db: None) -> None:
    # Exits with status 1 when a model differs from the migrations (frozen type choices did).
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.usefixtures("toy_registered")
def test_the_admin_offers_a_registered_kind(db: None, staff: User, tmp_path: Path) -> None:
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:backends_backend_add")).content.decode()
    assert '<option value="toy">Toy scheduler</option>' in page
    form = {"name": "toys", "settings": f'{{"job_dir": "{tmp_path}"}}', "max_concurrent": 2, "status": "unknown"}
    response = client.post(reverse("admin:backends_backend_add"), {**form, "kind": "toy"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert Backend.objects.get(name="toys").kind == "toy"


def test_the_admin_refuses_an_unknown_kind_naming_the_known_ones(db: None, staff: User) -> None:
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    form = {"name": "lsf", "kind": "lsf", "settings": "{}", "max_concurrent": 2, "status": "unknown"}
    response = client.post(reverse("admin:backends_backend_add"), form)
    assert response.status_code == 200
    assert "unknown backend type &#x27;lsf&#x27; (expected one of: local, slurm, pbs, batch, ec2, ecs)" in (
        response.content.decode()
    )
    assert not Backend.objects.filter(name="lsf").exists()


def test_an_unregistered_kind_is_refused_by_the_config_the_model_and_the_settings(db: None, tmp_path: Path) -> None:
    known = "(expected one of: local, slurm, pbs, batch, ec2, ecs)"
    with pytest.raises(ConfigError) as refused:
        import_config(toy_config(tmp_path))
    assert refused.value.errors == [f"backends[0].type: unknown backend type 'toy' {known}"]
    with pytest.raises(ValidationError) as invalid:
        Backend(name="toys", kind="toy", settings={}).full_clean()
    assert invalid.value.message_dict == {"kind": [f"unknown backend type 'toy' {known}"]}
    with pytest.raises(ValueError, match=r"type: unknown backend type 'toy' \(expected one of"):
        validate_backend_settings("toy", {"job_dir": str(tmp_path)})
