"""Git checkouts no task can change, and repository credentials kept secret (issue 18, finding 2).

Real git over a loopback HTTP server that wants a user name and password
(``tests/git_server.py``: ``git http-backend`` behind Basic authentication), the real
local backend, and for the task's side a real unprivileged account (``run_as``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, override_settings

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import get_adapter, shell_access
from runs.actions import create_run
from runs.models import AuditEvent, PortalSettings, Run, Task, Workflow
from runs.workflows.command import start_run
from scripthut_site import crypto
from sources.models import Source
from sources.sync import dry_run_source, start_source_run, sync_source
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.conftest import LOCAL_USERS
from tests.git_server import GitServer, git, git_server
from tests.test_local_run_as import runner_user  # noqa: F401  (fixture)
from tests.test_sources import log_path

PASSWORD = "S3cret-T0ken-4242"
HELLO = [{"id": "hello", "name": "hello", "command": "echo hello from the repository"}]
FORGED = [{"id": "hello", "name": "hello", "command": "echo FORGED BY ALICE"}]
WORKFLOW_FILE = ".hut/workflows/hello.json"
Runner = Callable[..., Run]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with git_server(tmp_path / "served", "robot", PASSWORD) as served:
        served.bare_repo("lab.git", {WORKFLOW_FILE: json.dumps(HELLO), "data/input.txt": "42\n"})
        yield served


def output_of(run: Run, task_id: str = "hello") -> str:
    task = run.tasks.get(task_id=task_id)
    output = Path(log_path(task, "output")).read_text()
    errors = Path(log_path(task, "error")).read_text()
    assert task.state == Task.State.COMPLETED, (task.state, task.reason, output, errors)
    return output


def raw_column(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return str(cursor.fetchone()[0])


# -- (d) sync, clone and runs work through the credential helper ---------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_and_runs_authenticate_through_the_credential_helper_only(
    server: GitServer, local_backend: Backend, staff: User, run_to_end: Runner, tmp_path: Path
) -> None:
    source = Source.objects.create(
        name="lab", kind="git", backend=local_backend, url=server.url("lab.git"), clone_dir=str(tmp_path / "clones")
    )
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error == ""
    assert source.workflow_files == [WORKFLOW_FILE]
    assert (
        AuditEvent.objects.filter(action=AuditEvent.Action.SOURCE_CHANGED).count() == 1
    )  # created; a sync is no change
    # git asked without credentials first, then with those the helper gave it.
    assert server.refused >= 1 and server.authorized >= 2
    assert server.exposed == []  # never on a command line, while git talked to the server
    checkout = Path(source.root)
    assert PASSWORD not in (checkout / ".git" / "config").read_text()
    assert git("-C", str(checkout), "remote", "get-url", "origin") == f"http://127.0.0.1:{server.port}/lab.git"
    stored = Path.home() / ".git-credentials"  # no credential helper of the account kept it
    assert not stored.exists() or PASSWORD not in stored.read_text()

    run = run_to_end(start_source_run(source, WORKFLOW_FILE, staff))
    assert output_of(run) == "hello from the repository\n"
    assert PASSWORD not in run.git_repo
    assert not list((tmp_path / "clones").glob(".replaced-*"))  # verified and reused, not cloned again

    # A configured workflow's git block too: its command runs in the checkout.
    workflow = Workflow.objects.create(
        name="gen",
        backend=local_backend,
        command=f"cat {WORKFLOW_FILE}",
        git={"repo": server.url("lab.git"), "clone_dir": str(tmp_path / "wf-clones")},
    )
    run = run_to_end(start_run(workflow, staff))
    assert output_of(run) == "hello from the repository\n"
    assert PASSWORD not in (Path(run.clone_dir) / ".git" / "config").read_text()
    assert server.exposed == []

    # A wrong password is an error that names neither it nor the right one.
    source.url = server.url("lab.git", password="Wr0ng-Passw0rd")
    source.save()
    sync_source(source)
    source.refresh_from_db()
    assert "Authentication failed" in source.sync_error
    assert "Wr0ng-Passw0rd" not in source.sync_error and PASSWORD not in source.sync_error


@pytest.mark.django_db
def test_a_source_of_a_backend_without_a_shell_clones_on_the_portal_through_the_helper(
    server: GitServer, tmp_path: Path
) -> None:
    portal = PortalSettings.load()
    portal.sources_cache_dir = str(tmp_path / "cache")
    portal.save()
    batch = Backend.objects.create(name="aws-batch", kind="batch", settings={})  # AWS itself is never asked
    source = Source.objects.create(name="lab", kind="git", backend=batch, url=server.url("lab.git"))
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error == "" and source.workflow_files == [WORKFLOW_FILE]
    assert server.exposed == [] and server.authorized >= 2
    (config,) = (tmp_path / "cache").glob("*/*/.git/config")
    assert PASSWORD not in config.read_text()


# -- (c) the password at rest, on the admin pages, and through rotate-keys ------------------


@pytest.mark.django_db
def test_the_password_is_encrypted_at_rest_and_write_only_on_the_admin(
    server: GitServer, local_backend: Backend, client: Client
) -> None:
    url = server.url("lab.git")
    source = Source.objects.create(name="lab", kind="git", backend=local_backend, url=url, clone_dir="/srv/r")
    workflow = Workflow.objects.create(name="gen", backend=local_backend, command="x", git={"repo": url})
    for sql in ("SELECT url FROM sources_source", "SELECT git FROM runs_workflow"):
        assert PASSWORD not in raw_column(sql) and "robot" not in raw_column(sql), sql

    admin = User.objects.create_superuser("root-admin", password="pw-admin-123")
    client.force_login(admin)
    masked = f"http://robot:***@127.0.0.1:{server.port}/lab.git"
    for page in (f"/admin/sources/source/{source.pk}/change/", f"/admin/runs/workflow/{workflow.pk}/change/"):
        text = client.get(page).content.decode()
        assert PASSWORD not in text and masked in text, page

    viewer = User.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_source", "view_workflow"]))
    client.force_login(viewer)  # may only look: every field is shown as text
    for page in (f"/admin/sources/source/{source.pk}/change/", f"/admin/runs/workflow/{workflow.pk}/change/"):
        text = client.get(page).content.decode()
        assert PASSWORD not in text and masked in text, page
    client.force_login(admin)

    # Saved as shown, the password stays; typed anew, it replaces the old one.
    form = {
        "name": "lab",
        "kind": "git",
        "backend": local_backend.pk,
        "workflows_glob": source.workflows_glob,
        "url": masked,
        "branch": "main",
        "clone_dir": "/srv/r",
    }
    assert client.post(f"/admin/sources/source/{source.pk}/change/", form).status_code == 302
    assert Source.objects.get().url == url
    workflow_form = {"name": "gen", "backend": local_backend.pk, "command": "x", "max_concurrent": 10}
    workflow_form["git"] = json.dumps({"repo": masked})
    assert client.post(f"/admin/runs/workflow/{workflow.pk}/change/", workflow_form).status_code == 302
    assert Workflow.objects.get().git == {"repo": url}
    other = f"http://someone:***@127.0.0.1:{server.port}/lab.git"  # *** of another user: refused
    refused = client.post(f"/admin/sources/source/{source.pk}/change/", {**form, "url": other})
    assert refused.status_code == 200 and "type the password again" in refused.content.decode()
    assert PASSWORD not in refused.content.decode()
    renewed = server.url("lab.git", password="N3w-T0ken")
    assert client.post(f"/admin/sources/source/{source.pk}/change/", {**form, "url": renewed}).status_code == 302
    assert Source.objects.get().url == renewed


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_repository_credentials(
    tmp_path: Path, local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCRIPTHUT_SECRET_KEYS", raising=False)
    url = f"https://robot:{PASSWORD}@git.example.org/lab.git"
    with override_settings(DATA_DIR=tmp_path):
        Source.objects.create(name="lab", kind="git", backend=local_backend, url=url)
        Workflow.objects.create(name="gen", backend=local_backend, command="x", git={"repo": url})
        (old,) = (tmp_path / crypto.KEY_FILE).read_text().split()
        before = raw_column("SELECT url FROM sources_source"), raw_column("SELECT git FROM runs_workflow")
        call_command("rotate_keys", "--new-key")
        new, _ = (tmp_path / crypto.KEY_FILE).read_text().split()
        crypto.write_key_file([new.encode()])  # the old key is gone: the new one alone reads them
        assert Source.objects.get().url == url
        assert Workflow.objects.get().git == {"repo": url}
        after = raw_column("SELECT url FROM sources_source"), raw_column("SELECT git FROM runs_workflow")
        assert all(b != a and PASSWORD not in a for b, a in zip(before, after, strict=True))
        crypto.write_key_file([old.encode()])
        with pytest.raises(crypto.SecretKeyError):
            Source.objects.get()
    crypto.forget_keys()


# -- (b) a changed checkout is cloned again before a run uses it ----------------------------


@pytest.mark.django_db(transaction=True)
def test_a_changed_checkout_is_cloned_again_before_the_next_run(
    server: GitServer, local_backend: Backend, staff: User, run_to_end: Runner, tmp_path: Path
) -> None:
    source = Source.objects.create(
        name="lab", kind="git", backend=local_backend, url=server.url("lab.git"), clone_dir=str(tmp_path / "clones")
    )
    sync_source(source)
    source.refresh_from_db()
    checkout = Path(source.root)

    # Dirty: a tracked file rewritten (mode and times kept, as a careful forger would).
    hello = checkout / WORKFLOW_FILE
    times = hello.stat()
    hello.write_text(json.dumps(FORGED))
    os.utime(hello, ns=(times.st_atime_ns, times.st_mtime_ns))
    run = run_to_end(start_source_run(source, WORKFLOW_FILE, staff))
    assert output_of(run) == "hello from the repository\n"

    # HEAD moved: a commit made in the checkout.
    hello.write_text(json.dumps(FORGED))
    git("-C", str(checkout), "commit", "-q", "-am", "forged")
    run = run_to_end(start_source_run(source, WORKFLOW_FILE, staff))
    assert output_of(run) == "hello from the repository\n"
    assert git("-C", str(checkout), "rev-parse", "HEAD") == source.synced_sha
    assert json.loads(hello.read_text()) == HELLO
    assert len(list((tmp_path / "clones").glob(".replaced-*"))) == 2  # moved aside, not deleted


# -- (a) a task cannot change the checkout nor read the credentials ---------------------------


@pytest.fixture
def shared_clone_dir() -> Iterator[str]:
    """A world-writable sticky directory (like /tmp), where the runner could have cloned
    before: its own entries there are its own, the portal's are not."""
    path = tempfile.mkdtemp(prefix="scripthut-git-test-", dir="/var/tmp")  # noqa: S108
    os.chmod(path, 0o1777)  # noqa: S103  (a sticky shared directory, on purpose)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.django_db(transaction=True)
def test_a_task_cannot_change_the_checkout_nor_read_its_credentials(
    server: GitServer,
    runner_user: object,  # noqa: F811  (fixture)
    shared_clone_dir: str,
    user: User,
    staff: User,
    run_to_end: Runner,
) -> None:
    backend = Backend.objects.create(
        name="git-shared", kind=Backend.Kind.LOCAL, settings={"run_as": "scripthut-runner"}, poll_interval=1
    )
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    source = Source.objects.create(
        name="lab", kind="git", backend=backend, url=server.url("lab.git"), clone_dir=shared_clone_dir
    )
    source.allowed_groups.add(Group.objects.create(name="staff-only"))  # alice is refused on it
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error == ""
    checkout = Path(source.root)
    assert stat.S_IMODE(checkout.stat().st_mode) & 0o022 == 0

    # Alice's own run on the backend they share, in the checkout she found on disk.
    forged = json.dumps(FORGED)
    attack = (
        f"cd {checkout} || exit 1; "
        f"if printf '%s' '{forged}' > {WORKFLOW_FILE}; then echo WROTE; else echo REFUSED; fi; "
        "if touch .hut/workflows/new.json; then echo ADDED; else echo REFUSED; fi; "
        "cat .git/config; git config --get remote.origin.url; true"
    )
    payload = [{"id": "attack", "name": "attack", "command": attack}]
    alice_run = run_to_end(create_run(owner=user, backend=backend, payload=payload, workflow_name="x"))
    seen = output_of(alice_run, "attack")
    assert "WROTE" not in seen and "ADDED" not in seen and seen.count("REFUSED") == 2
    assert PASSWORD not in seen and "robot" not in seen
    assert json.loads((checkout / WORKFLOW_FILE).read_text()) == HELLO

    # The next staff run of the source runs the repository's command.
    staff_run = run_to_end(start_source_run(source, WORKFLOW_FILE, staff))
    assert output_of(staff_run) == "hello from the repository\n"


# -- the data migrations ------------------------------------------------------------------

BEFORE = [("sources", "0002_allowed_groups"), ("runs", "0018_verified_email")]


@pytest.mark.django_db(transaction=True)
def test_the_migrations_encrypt_the_urls_stored_in_clear() -> None:
    url = f"https://robot:{PASSWORD}@git.example.org/lab.git"
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    backend = old.get_model("backends", "Backend").objects.create(name="local", kind="local")
    old.get_model("sources", "Source").objects.create(name="lab", kind="git", backend=backend, url=url)
    workflows = old.get_model("runs", "Workflow")
    workflows.objects.create(name="gen", backend=backend, command="x", git={"repo": url, "branch": "dev"})
    workflows.objects.create(name="plain", backend=backend, command="x", git=None)
    assert PASSWORD in raw_column("SELECT url FROM sources_source")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    for sql in ("SELECT url FROM sources_source", "SELECT git FROM runs_workflow WHERE name = 'gen'"):
        assert PASSWORD not in raw_column(sql), sql
    assert Source.objects.get().url == url
    assert Workflow.objects.get(name="gen").git == {"repo": url, "branch": "dev"}
    assert Workflow.objects.get(name="plain").git is None

    executor = MigrationExecutor(connection)  # and back, in clear again
    executor.migrate(BEFORE)
    assert raw_column("SELECT url FROM sources_source") == url
    assert json.loads(raw_column("SELECT git FROM runs_workflow WHERE name = 'gen'")) == {"repo": url, "branch": "dev"}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


# -- over SSH: the backend's own account clones, with the same helper ------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_slurm_source_clones_over_ssh_through_the_credential_helper(
    server: GitServer,
    cluster: Cluster,  # noqa: F811  (fixture)
) -> None:
    settings = validate_backend_settings("slurm", {"ssh": cluster.ssh_settings(), "account": cluster.account})
    slurm = Backend.objects.create(name="slurm", kind="slurm", settings=settings, poll_interval=1)
    clone_dir = f"~/scripthut-git-test-{server.port}"
    source = Source.objects.create(
        name="lab", kind="git", backend=slurm, url=server.url("lab.git"), clone_dir=clone_dir
    )
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error == "" and source.workflow_files == [WORKFLOW_FILE]
    assert source.root.startswith("/") and source.root.endswith(source.synced_sha)
    shell = shell_access(get_adapter(slurm))
    assert PASSWORD not in shell.read_file(f"{source.root}/.git/config")
    assert server.exposed == [] and server.authorized >= 2
    (task,) = dry_run_source(source, WORKFLOW_FILE)  # verified before it is read
    assert task.definition.command == "echo hello from the repository"
    assert ".replaced-" not in shell.run_command(f"ls -a {clone_dir}").stdout  # reused, not cloned again
    shell.run_command(f"chmod -R u+w {clone_dir} && rm -rf {clone_dir}")


@pytest.mark.cluster
@pytest.mark.django_db
def test_a_deploy_key_reaches_an_ssh_remote(
    cluster: Cluster,  # noqa: F811  (fixture)
    local_backend: Backend,
    tmp_path: Path,
) -> None:
    served = Path(tempfile.mkdtemp(prefix="scripthut-git-served-", dir="/var/tmp"))  # noqa: S108
    try:
        os.chmod(served, 0o755)  # noqa: S103  (the cluster's user reads it)
        work = tmp_path / "work"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        (work / ".hut" / "workflows").mkdir(parents=True)
        (work / WORKFLOW_FILE).write_text(json.dumps(HELLO))
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "init", cwd=work)
        git("clone", "-q", "--bare", str(work), str(served / "lab.git"))
        subprocess.run(["chown", "-R", cluster.user, str(served)], check=True)  # its repository
        url = f"ssh://{cluster.user}@{cluster.host}:{cluster.port}{served}/lab.git"
        source = Source.objects.create(
            name="lab",
            kind="git",
            backend=local_backend,
            url=url,
            deploy_key=cluster.key_path,
            clone_dir=str(tmp_path / "clones"),
        )
        sync_source(source)
        source.refresh_from_db()
        assert source.sync_error == "" and source.workflow_files == [WORKFLOW_FILE]
    finally:
        shutil.rmtree(served, ignore_errors=True)


# -- a per_user local backend: the portal clones, each user's account reads --------------------


@pytest.mark.django_db(transaction=True)
def test_a_git_source_on_a_per_user_backend_syncs_and_runs_as_its_user(
    server: GitServer, user: User, staff: User, run_to_end: Runner
) -> None:
    """Sync lists and reads the checkout as the account that made it (the portal's): a
    per_user backend has no task account to do it as, and its adapter runs nothing without one."""
    import shutil
    import uuid

    from django.contrib.auth.models import Group

    from tests.os_accounts import ensure_account
    from tests.test_local_per_user import ACCOUNT

    for name in ("alice", "carol"):
        ensure_account(ACCOUNT.format(username=name))
    backend = Backend.objects.create(
        name="peruser-git",
        kind=Backend.Kind.LOCAL,
        settings={"run_as": "per_user", "os_user": ACCOUNT},
        poll_interval=1,
    )
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    clones = Path(f"/var/tmp/scripthut-test-clones-{uuid.uuid4().hex[:8]}")  # noqa: S108 (readable by the accounts)
    clones.mkdir(mode=0o755)
    try:
        source = Source.objects.create(
            name="lab", kind="git", backend=backend, url=server.url("lab.git"), clone_dir=str(clones)
        )
        sync_source(source)
        source.refresh_from_db()
        assert (source.sync_error, source.workflow_files) == ("", [WORKFLOW_FILE])
        for owner in (user, staff):
            run = run_to_end(start_source_run(source, WORKFLOW_FILE, owner))
            assert output_of(run) == "hello from the repository\n"
    finally:
        shutil.rmtree(clones, ignore_errors=True)
