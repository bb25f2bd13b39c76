"""The config file: schema, error messages, and importing into the database."""

from __future__ import annotations

import io
import pwd
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from backends.config import validate_backend_settings
from backends.local.settings import LocalSettings, runs_as_portal_user
from backends.models import Backend, Environment
from runs.models import PortalSettings, Run, Workflow
from scripthut_site.config import ConfigError, import_config, load_config
from sources.models import Source

SPEC_EXAMPLE = Path(__file__).parent / "fixtures" / "spec-example.yaml"

SLURM: dict[str, Any] = {"name": "hpc", "type": "slurm", "ssh": {"host": "login.example.edu", "user": "me"}}
LOCAL: dict[str, Any] = {"name": "here", "type": "local"}
WORKFLOW: dict[str, Any] = {"name": "sims", "backend": "hpc", "command": "python gen.py"}


def config_text(**sections: Any) -> str:
    return yaml.safe_dump(sections, sort_keys=False)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return info.value.errors


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every config-managed row, to check that a failed import changed nothing."""
    models = [Backend, Environment, Source, Workflow, PortalSettings, Run]
    return {model.__name__: list(model._default_manager.order_by("pk").values()) for model in models}


# Loading the spec's example.


def test_spec_example_loads() -> None:
    config = load_config(SPEC_EXAMPLE)

    assert [b.name for b in config.backends] == ["hpc-cluster", "pbs-cluster", "aws-batch", "aws-ec2"]
    assert [b.type for b in config.backends] == ["slurm", "pbs", "batch", "ec2"]
    assert config.warnings() == []
    ec2 = config.backends[3]
    assert ec2.max_concurrent == 20  # defaults to max_instances
    assert config.environments[0].variables == {
        "JULIA_DEPOT_PATH": "/scratch/user/julia_depot",
        "JULIA_NUM_THREADS": "8",
    }
    assert config.pricing is not None and config.pricing.price_type == "spot_avg"


def test_load_config_accepts_text_and_str_paths() -> None:
    assert len(load_config(str(SPEC_EXAMPLE)).backends) == 4
    assert load_config(SPEC_EXAMPLE.read_text()).settings.server_port == 8000
    assert load_config("").backends == []  # empty file: every section is optional


@pytest.mark.django_db
def test_spec_example_imports() -> None:
    out = io.StringIO()
    report = import_config(SPEC_EXAMPLE, stdout=out)

    assert report.created == {
        "backends": 4,
        "environments": 2,
        "sources": 1,
        "workflows": 2,
        "schedules": 0,
        "settings": 1,
    }
    assert report.warnings == []
    assert "backends: 4 created" in out.getvalue()
    assert Backend.objects.count() == 4
    assert Environment.objects.count() == 2
    assert Source.objects.count() == 1
    assert Workflow.objects.count() == 2
    assert PortalSettings.objects.count() == 1

    hpc = Backend.objects.get(name="hpc-cluster")
    assert (hpc.kind, hpc.max_concurrent, hpc.poll_interval, hpc.enabled) == ("slurm", 100, None, True)
    assert hpc.settings["ssh"] == {
        "host": "slurm-login.cluster.edu",
        "port": 22,
        "user": "researcher",
        "key_path": "~/.ssh/id_rsa",
        "cert_path": None,
        "known_hosts": None,
        "allow_unknown_host_keys": False,
        "identity": "shared",
    }
    assert hpc.settings["account"] == "my-allocation"
    assert hpc.settings["native_dependencies"] is True
    assert not {"name", "type", "max_concurrent", "poll_interval"} & set(hpc.settings)

    assert Backend.objects.get(name="pbs-cluster").settings["queue"] == "batch"
    batch = Backend.objects.get(name="aws-batch")
    assert batch.max_concurrent == 50
    assert batch.settings["job_definition"] == "simpleJobDef-b760b37"
    assert batch.settings["job_definition_mode"] == "locked"
    assert batch.settings["aws"] == {
        "profile": "my-profile",
        "region": "us-east-1",
        "endpoint_url": None,
        "job_queue": "my-batch-queue",
    }
    ec2 = Backend.objects.get(name="aws-ec2")
    assert ec2.max_concurrent == 20
    assert ec2.settings["security_group_ids"] == ["sg-0abc..."]
    assert ec2.settings["instance_types"] == {"default": "c5.xlarge", "gpu": "g4dn.xlarge"}
    assert ec2.settings["extra_tags"] == {"Environment": "research"}

    source = Source.objects.get(name="ml-jobs")
    assert (source.kind, source.backend, source.url) == ("git", hpc, "git@github.com:org/ml-pipelines.git")
    assert source.deploy_key == "~/.ssh/ml-jobs-deploy-key"
    assert source.workflows_glob == ".hut/workflows/*.json"

    python_ml = Environment.objects.get(name="python-ml")
    assert python_ml.variables == {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4"}
    assert python_ml.extra_init == "module load cuda/12.0\nsource ~/envs/ml/bin/activate\n"

    plain = Workflow.objects.get(name="my-batch-jobs")
    assert (plain.backend, plain.max_concurrent, plain.git) == (hpc, 10, None)
    git = Workflow.objects.get(name="ml-training-git")
    assert git.git == {
        "repo": "git@github.com:your-org/ml-pipelines.git",
        "branch": "main",
        "deploy_key": "~/.ssh/ml-deploy-key",
        "clone_dir": "~/scripthut-repos",
    }

    portal = PortalSettings.load()
    assert (portal.poll_interval, portal.server_host, portal.server_port) == (60, "127.0.0.1", 8000)
    assert portal.pricing == {
        "region": "us-east-1",
        "price_type": "spot_avg",
        "partitions": {"standard": "c5.xlarge", "gpu": "p3.2xlarge"},
        "source": None,  # the default URL
        "share": "max",
        "fargate": None,
    }


# Re-importing.


@pytest.mark.django_db
def test_reimport_updates_in_place_and_keeps_runs() -> None:
    import_config(SPEC_EXAMPLE)
    hpc = Backend.objects.get(name="hpc-cluster")
    workflow = Workflow.objects.get(name="my-batch-jobs")
    owner = get_user_model().objects.create_user("alice")
    run = Run.objects.create(owner=owner, workflow_name=workflow.name, workflow=workflow, backend=hpc)

    edited = SPEC_EXAMPLE.read_text().replace("slurm-login.cluster.edu", "new-login.cluster.edu")
    report = import_config(edited)

    assert report.created == dict.fromkeys(report.created, 0)
    assert report.updated["backends"] == 1  # only the edited one
    assert report.updated["workflows"] == 0
    hpc_after = Backend.objects.get(name="hpc-cluster")
    assert hpc_after.pk == hpc.pk
    assert hpc_after.settings["ssh"]["host"] == "new-login.cluster.edu"
    run.refresh_from_db()
    assert (run.backend_id, run.workflow_id) == (hpc.pk, workflow.pk)
    assert Backend.objects.count() == 4


@pytest.mark.django_db
def test_reimport_without_changes_updates_nothing() -> None:
    import_config(SPEC_EXAMPLE)
    report = import_config(SPEC_EXAMPLE)
    assert report.created == report.updated == report.deleted == report.disabled
    assert set(report.created.values()) == {0}


@pytest.mark.django_db
def test_removed_backend_is_disabled_and_removed_workflow_deleted() -> None:
    import_config(config_text(backends=[SLURM, LOCAL], workflows=[WORKFLOW]))
    hpc = Backend.objects.get(name="hpc")
    owner = get_user_model().objects.create_user("alice")
    workflow = Workflow.objects.get(name="sims")
    run = Run.objects.create(owner=owner, workflow_name="sims", workflow=workflow, backend=hpc)

    report = import_config(config_text(backends=[LOCAL]))

    assert report.disabled["backends"] == 1
    assert report.deleted["workflows"] == 1
    assert Backend.objects.get(name="hpc").enabled is False
    assert Backend.objects.get(name="here").enabled is True
    assert not Workflow.objects.exists()
    run.refresh_from_db()
    assert (run.backend_id, run.workflow_id, run.workflow_name) == (hpc.pk, None, "sims")

    # Putting it back enables the same row again.
    report = import_config(config_text(backends=[SLURM, LOCAL]))
    assert report.updated["backends"] == 1
    assert Backend.objects.get(name="hpc") == hpc and Backend.objects.get(name="hpc").enabled


@pytest.mark.django_db
def test_local_backend_keeps_its_poll_interval() -> None:
    import_config(config_text(backends=[{**LOCAL, "poll_interval": 5, "log_dir": "/tmp/logs"}]))
    here = Backend.objects.get(name="here")
    assert (here.max_concurrent, here.poll_interval) == (4, 5)
    assert here.settings == {
        "log_dir": "/tmp/logs",
        "run_as": None,
        "os_user": "{username}",
        "os_users": {},
        "network": None,
        "work_dir": None,
        "allowed_paths": [],
    }


# Errors: exact key paths, and nothing changes in the database.


@pytest.fixture
def imported(db: None) -> dict[str, list[dict[str, Any]]]:
    import_config(SPEC_EXAMPLE)
    return snapshot()


def assert_rejected(text: str | Path, expected: list[str], before: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        import_config(text)
    assert info.value.errors == expected
    assert str(info.value) == "\n".join(expected)
    assert snapshot() == before


def test_missing_ssh_host(imported: dict[str, Any]) -> None:
    bad = {**SLURM, "ssh": {"user": "me"}}
    assert_rejected(config_text(backends=[LOCAL, bad]), ["backends[1].ssh.host: field required"], imported)


def test_unknown_backend_reference(imported: dict[str, Any]) -> None:
    workflow = {**WORKFLOW, "backend": "nope"}
    source = {"name": "p", "type": "path", "path": "/data", "backend": "nope"}
    assert_rejected(
        config_text(backends=[SLURM], sources=[source], workflows=[workflow]),
        ["sources[0].backend: unknown backend 'nope'", "workflows[0].backend: unknown backend 'nope'"],
        imported,
    )


def test_duplicate_names(imported: dict[str, Any]) -> None:
    assert_rejected(
        config_text(backends=[SLURM, LOCAL, {**LOCAL, "name": "hpc"}], workflows=[WORKFLOW, WORKFLOW]),
        [
            "backends[2].name: duplicate backend name 'hpc'",
            "workflows[1].name: duplicate workflow name 'sims'",
        ],
        imported,
    )


def test_bad_yaml(imported: dict[str, Any]) -> None:
    text = "backends:\n  - name: a\n    type: slurm\n   ssh: {host: x}\n"
    with pytest.raises(ConfigError) as info:
        import_config(text)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("line 4, column 4: invalid YAML:")
    assert snapshot() == imported


def test_wrong_types(imported: dict[str, Any]) -> None:
    bad = {**SLURM, "max_concurrent": "lots", "ssh": {"host": "x", "port": "twenty-two"}}
    not_an_int = "input should be a valid integer, unable to parse string as an integer"
    assert_rejected(
        config_text(backends=[bad], settings={"server_port": 70000}),
        [
            f"backends[0].ssh.port: {not_an_int}",
            f"backends[0].max_concurrent: {not_an_int}",
            "settings.server_port: input should be less than or equal to 65535",
        ],
        imported,
    )


def test_an_incomplete_ecs_backend_is_refused_naming_every_missing_key(imported: dict[str, Any]) -> None:
    ecs = {"name": "fargate", "type": "ecs", "aws": {"region": "us-east-1"}}
    assert_rejected(config_text(backends=[ecs]), ["backends[0].cluster: field required"], imported)
    ecs["cluster"] = "jobs"
    assert_rejected(
        config_text(backends=[ecs]),
        [
            "backends[0].task_definition: either task_definition or default_image must be set",
            "backends[0].subnets: at least one subnet is needed for launch_type FARGATE",
            "backends[0].security_groups: at least one security group is needed for launch_type FARGATE",
        ],
        imported,
    )


@pytest.mark.django_db
def test_an_ecs_backend_is_imported(tmp_path: Path) -> None:
    ecs = {
        "name": "fargate",
        "type": "ecs",
        "aws": {"region": "us-east-1"},
        "cluster": "jobs",
        "subnets": ["subnet-1"],
        "security_groups": ["sg-1"],
        "default_image": "busybox",
        "max_concurrent": 7,
    }
    import_config(config_text(backends=[ecs]))
    backend = Backend.objects.get(name="fargate")
    assert (backend.kind, backend.max_concurrent, backend.settings["cluster"]) == ("ecs", 7, "jobs")
    assert backend.settings["launch_type"] == "FARGATE"


def test_unknown_and_missing_types(imported: dict[str, Any]) -> None:
    assert_rejected(
        config_text(backends=[{"name": "a", "type": "lsf"}, {"name": "b"}]),
        [
            "backends[0].type: unknown backend type 'lsf' (expected one of: local, slurm, pbs, batch, ec2, ecs)",
            "backends[1].type: field required",
        ],
        imported,
    )


def test_batch_needs_a_job_definition_or_image(imported: dict[str, Any]) -> None:
    batch = {"name": "b", "type": "batch", "aws": {"region": "us-east-1", "job_queue": "q"}}
    assert_rejected(
        config_text(backends=[batch, {**batch, "name": "c", "retry_attempts": 11, "default_image": "img"}]),
        [
            "backends[0].job_definition: either job_definition or default_image must be set",
            "backends[1].retry_attempts: input should be less than or equal to 10",
        ],
        imported,
    )


def test_missing_file(imported: dict[str, Any], tmp_path: Path) -> None:
    missing = tmp_path / "scripthut.yaml"
    assert_rejected(missing, [f"{missing}: file not found"], imported)


def test_not_a_mapping() -> None:
    assert errors_of("- just\n- a list\n") == ["config: must be a mapping of sections (backends, sources, ...)"]


# Unknown keys are warnings.


@pytest.mark.django_db
def test_unknown_keys_are_warnings() -> None:
    text = config_text(
        backends=[{**SLURM, "colour": "blue", "ssh": {**SLURM["ssh"], "compression": True}}],
        workflows=[WORKFLOW],
        settings={"theme": "dark"},
        notifications={"email": "x@example.com"},
    )
    report = import_config(text)

    assert sorted(report.warnings) == [
        "backends[0].colour: unknown key, ignored",
        "backends[0].ssh.compression: unknown key, ignored",
        "notifications: unknown key, ignored",
        "settings.theme: unknown key, ignored",
    ]
    hpc = Backend.objects.get(name="hpc")
    assert "colour" not in hpc.settings and "compression" not in hpc.settings["ssh"]


def test_numbers_become_strings() -> None:
    env = {"name": "e", "variables": {"THREADS": 8, "RATIO": 0.5, "DEBUG": True}}
    config = load_config(config_text(environments=[env]))
    assert config.environments[0].variables == {"THREADS": "8", "RATIO": "0.5", "DEBUG": "true"}


def test_empty_sections() -> None:
    config = load_config("backends:\nworkflows:\nsettings:\n")
    assert config.backends == [] and config.workflows == []
    assert config.settings.poll_interval == 60


# Backend.settings validation (admin).


def test_validate_backend_settings() -> None:
    settings = validate_backend_settings("slurm", {"ssh": {"host": "h"}, "account": 42})
    assert settings["ssh"]["port"] == 22
    assert settings["account"] == "42"
    assert "name" not in settings and "max_concurrent" not in settings
    ec2 = validate_backend_settings("ec2", {"aws": {"region": "r"}, "ami": "a", "subnet_id": "s"})
    assert ec2["instance_types"] == {"default": "c5.xlarge"}

    with pytest.raises(ValueError, match=r"^ssh\.host: field required$"):
        validate_backend_settings("slurm", {"ssh": {}})
    with pytest.raises(ValueError, match=r"^ssh\.hots: unknown key \(did you mean 'host'\?\)$"):
        validate_backend_settings("slurm", {"ssh": {"host": "h", "hots": "h"}})
    with pytest.raises(ValueError, match=r"^aws: field required\ncluster: field required$"):
        validate_backend_settings("ecs", {})


@pytest.mark.django_db
def test_backend_clean() -> None:
    backend = Backend(name="b", kind="pbs", settings={"ssh": {"host": "h"}, "queue": "long"})
    backend.full_clean()
    assert backend.settings["queue"] == "long" and backend.settings["login_shell"] is False

    backend.settings = {"ssh": {"host": "h", "port": "x"}}
    with pytest.raises(ValidationError) as info:
        backend.full_clean()
    assert "ssh.port: input should be a valid integer" in str(info.value.message_dict["settings"])


# The management command.


@pytest.mark.django_db
def test_import_config_command(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("import_config", str(SPEC_EXAMPLE), stdout=out)
    assert "backends: 4 created, 0 updated, 0 disabled, 0 deleted" in out.getvalue()

    bad = tmp_path / "bad.yaml"
    bad.write_text(config_text(backends=[{"name": "x", "type": "lsf"}]))
    with pytest.raises(CommandError, match=r"backends\[0\]\.type: unknown backend type 'lsf'"):
        call_command("import_config", str(bad), stdout=io.StringIO())
    assert Backend.objects.filter(enabled=True).count() == 4


# Local backends: run_as, work_dir, allowed_paths, and who they may be shared with.

UNPRIVILEGED = "nobody"  # exists on every Debian host


def local_errors(**keys: Any) -> list[str]:
    return errors_of(config_text(backends=[{**LOCAL, **keys}]))


def test_run_as_must_be_an_unprivileged_other_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_errors(run_as="root") == [
        "backends[0].run_as: 'root' is root (uid 0): tasks must run as an unprivileged user"
    ]
    assert local_errors(run_as="no-such-user-here") == [
        "backends[0].run_as: no such user 'no-such-user-here' on this host"
    ]
    monkeypatch.setattr("backends.local.settings.os.geteuid", lambda: pwd.getpwnam(UNPRIVILEGED).pw_uid)
    (error,) = local_errors(run_as=UNPRIVILEGED)
    assert error.startswith("backends[0].run_as: 'nobody' is the portal's own user")


def test_local_backend_shared_with_groups_must_name_run_as() -> None:
    (error,) = local_errors(allowed_groups=["students"])
    assert error.startswith("backends[0].allowed_groups: a local backend shared with groups must name run_as")
    assert "secret key" in error
    config = load_config(config_text(backends=[{**LOCAL, "allowed_groups": ["students"], "run_as": UNPRIVILEGED}]))
    local = config.backends[0]
    assert isinstance(local, LocalSettings) and local.confined
    assert not LocalSettings.model_validate(LOCAL).confined
    assert runs_as_portal_user({}) and not runs_as_portal_user({"run_as": UNPRIVILEGED})


def test_admin_form_validates_run_as_too() -> None:
    assert validate_backend_settings("local", {"run_as": UNPRIVILEGED})["run_as"] == UNPRIVILEGED
    with pytest.raises(ValueError, match="run_as: 'root' is root"):
        validate_backend_settings("local", {"run_as": "root"})


def test_work_dir_and_allowed_paths_are_absolute() -> None:
    assert local_errors(work_dir="jobs", allowed_paths=["/ok", "rel"]) == [
        "backends[0].work_dir: must be an absolute path, not 'jobs'",
        "backends[0].allowed_paths: must be absolute paths, not 'rel'",
    ]
