"""Who may run what, where: backends, sources and workflows shared with Django groups.

Each finding of the issue, tried as a hostile ordinary user, fails on the code before
this change: any ordinary user could submit to the `local` backend (whose tasks run as
the portal's OS user), see every backend and every user's jobs, and read credentials
inside git URLs on /sources.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backends.models import Backend
from runs.access import AccessDenied
from runs.actions import create_run
from runs.models import ApiToken, AuditEvent, ObservedJob, Run, Task, Workflow
from scripthut_site.config import import_config
from sources.git import mask_credentials
from sources.models import Source
from tests.test_cli import home, scripthut  # noqa: F401, F811  (home is a fixture)

pytestmark = pytest.mark.django_db

TASKS = [{"id": "a", "name": "a", "command": "true"}]


@pytest.fixture
def dave(db: None) -> User:
    """An ordinary user in no group at all."""
    return User.objects.create_user("dave", password="pw-dave-12345")


@pytest.fixture
def physics(db: None) -> Group:
    return Group.objects.create(name="physics")


@pytest.fixture
def hpc(physics: Group) -> Backend:
    backend = Backend.objects.create(name="hpc", kind=Backend.Kind.SLURM, settings={"ssh": {"host": "h"}})
    backend.allowed_groups.add(physics)
    return backend


@pytest.fixture
def builtin_local(db: None) -> Backend:
    """A local backend as the embedded default makes it: shared with nobody."""
    return Backend.objects.create(name="here", kind=Backend.Kind.LOCAL)


def _api(user: User) -> Client:
    return Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})


def _post_run(user: User, backend: str) -> tuple[int, str]:
    response = _api(user).post(
        "/api/runs", data=json.dumps({"backend": backend, "workflow": TASKS}), content_type="application/json"
    )
    return response.status_code, response.json().get("error", "")


def test_an_ordinary_user_cannot_submit_to_the_local_backend(dave: User, staff: User, builtin_local: Backend) -> None:
    status, error = _post_run(dave, "here")
    assert status == 403 and "runs tasks on the portal host: only staff may use it" in error
    with pytest.raises(AccessDenied):
        create_run(owner=dave, backend=builtin_local, payload=TASKS, workflow_name="w")
    assert Run.objects.count() == 0
    assert _post_run(staff, "here")[0] == 201
    refusals = AuditEvent.objects.filter(action=AuditEvent.Action.SUBMISSION_REFUSED, actor=dave)
    assert refusals.count() == 2 and all("only staff" in r.detail["reason"] for r in refusals)


def test_a_workflow_page_refuses_with_the_reason(dave: User, builtin_local: Backend) -> None:
    Workflow.objects.create(name="wf", backend=builtin_local, command="echo '[]'")
    client = Client()
    client.force_login(dave)
    listed = client.get(reverse("workflow_list")).content.decode()
    # Not listed: no row, no link to it (a bare "wf" would also match the page's random CSRF token).
    assert "No workflows configured." in listed and reverse("workflow_dry_run", args=["wf"]) not in listed
    for response in (
        client.post(reverse("workflow_run", args=["wf"])),
        client.get(reverse("workflow_dry_run", args=["wf"])),
        client.post(reverse("workflow_dry_run", args=["wf"])),  # a dry run runs the command there too
    ):
        assert response.status_code == 403
        assert "backend 'here' runs tasks on the portal host: only staff may use it" in html.unescape(
            response.content.decode()
        )
    assert Run.objects.count() == 0


def test_a_backend_shared_with_a_group(user: User, dave: User, hpc: Backend, physics: Group) -> None:
    status, error = _post_run(dave, "hpc")
    assert status == 403 and error == "backend 'hpc' is shared with the groups physics, and you are in none of them"
    dave.groups.add(physics)
    dave = User.objects.get(pk=dave.pk)  # a fresh request: group ids are cached per user object
    run = create_run(owner=dave, backend=hpc, payload=TASKS, workflow_name="w")
    assert run.owner == dave


def test_sources_and_workflows_narrow_their_backend(dave: User, physics: Group, hpc: Backend) -> None:
    dave.groups.add(physics)
    open_wf = Workflow.objects.create(name="open", backend=hpc, command="x")
    closed = Workflow.objects.create(name="closed", backend=hpc, command="x")
    closed.allowed_groups.add(Group.objects.create(name="chemistry"))
    Source.objects.create(name="src", kind=Source.Kind.PATH, backend=hpc, path="/data")
    client = Client()
    client.force_login(dave)
    page = client.get(reverse("workflow_list")).content.decode()
    assert reverse("workflow_run", args=["open"]) in page and reverse("workflow_run", args=["closed"]) not in page
    response = client.post(reverse("workflow_run", args=["closed"]))
    assert response.status_code == 403
    assert "workflow 'closed' is shared with the groups chemistry only" in html.unescape(response.content.decode())
    assert [s["name"] for s in _api(dave).get("/api/sources").json()] == ["src"]
    assert open_wf.pk


def test_users_see_only_backends_and_jobs_they_may_use(
    user: User, dave: User, hpc: Backend, local_backend: Backend
) -> None:
    run = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="secret-workflow")
    Task.objects.filter(run=run).update(state="running", job_id="local-77", started_at=timezone.now())
    ObservedJob.objects.create(backend=hpc, job_id="900", name="someone-elses-job", user="zoe", state="running")
    ObservedJob.objects.create(backend=local_backend, job_id="local-77", our_task=run.tasks.get(), state="running")
    assert [b["name"] for b in _api(dave).get("/api/backends").json()] == []
    client = Client()
    client.force_login(dave)
    page = client.get(reverse("dashboard")).content.decode()
    for hidden in ("local-77", "someone-elses-job", "secret-workflow", ">hpc<", ">local<"):
        assert hidden not in page, hidden
    # Alice may use the local backend: her own job is there, named.
    client.force_login(user)
    page = client.get(reverse("dashboard")).content.decode()
    assert "local-77" in page and "secret-workflow" in page and "someone-elses-job" not in page


def test_config_shares_backends_sources_and_workflows(tmp_path: Path) -> None:
    config = tmp_path / "scripthut.yaml"
    config.write_text(
        "backends:\n"
        "  - name: hpc\n    type: slurm\n    ssh: {host: login}\n    allowed_groups: [physics, chemistry]\n"
        "sources:\n"
        "  - name: lab\n    type: path\n    path: /data\n    backend: hpc\n    allowed_groups: [physics]\n"
        "workflows:\n"
        "  - name: wf\n    backend: hpc\n    command: x\n    allowed_groups: [chemistry]\n"
    )
    import_config(config)
    assert sorted(Backend.objects.get(name="hpc").allowed_groups.values_list("name", flat=True)) == [
        "chemistry",
        "physics",
    ]
    assert list(Source.objects.get(name="lab").allowed_groups.values_list("name", flat=True)) == ["physics"]
    assert list(Workflow.objects.get(name="wf").allowed_groups.values_list("name", flat=True)) == ["chemistry"]
    assert "allowed_groups" not in Backend.objects.get(name="hpc").settings
    config.write_text(config.read_text().replace("[physics, chemistry]", "[physics]"))
    report = import_config(config)
    assert report.updated["backends"] == 1
    assert list(Backend.objects.get(name="hpc").allowed_groups.values_list("name", flat=True)) == ["physics"]


def test_credentials_in_git_urls_are_masked_wherever_shown(staff: User, local_backend: Backend) -> None:
    secret_url = "https://robot:ghp_s3cr3tT0ken@github.com/lab/flows.git"
    Source.objects.create(name="lab", kind=Source.Kind.GIT, backend=local_backend, url=secret_url)
    Workflow.objects.create(name="wf", backend=local_backend, command="x", git={"repo": secret_url})
    client = Client()
    client.force_login(staff)
    for url in (reverse("source_list"), reverse("source_workflows", args=["lab"]), reverse("workflow_list")):
        page = client.get(url).content.decode()
        assert "ghp_s3cr3tT0ken" not in page and "https://robot:***@github.com/lab/flows.git" in page, url
    listing = client.get(reverse("workflow_list"), headers={"Accept": "application/json"}).content.decode()
    assert "ghp_s3cr3tT0ken" not in listing
    assert mask_credentials("https://TOKEN@host/r.git") == "https://***@host/r.git"
    assert mask_credentials("git@github.com:lab/flows.git") == "git@github.com:lab/flows.git"
    assert mask_credentials("ssh://git@host/r.git") == "ssh://git@host/r.git"


def test_the_cli_refuses_too(home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    Path(home["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n")
    scripthut(home, "import-config", home["SCRIPTHUT_CONFIG"])
    scripthut(home, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('dave')")
    workflow = tmp_path / "w.json"
    workflow.write_text(json.dumps(TASKS))
    refused = scripthut(home, "run", str(workflow), "--backend", "local", "--user", "dave", check=False)
    assert refused.returncode == 3
    assert "refused: backend 'local' runs tasks on the portal host: only staff may use it" in refused.stderr


def test_the_admin_will_not_share_a_local_backend_that_runs_as_the_portal(
    client: Client, staff: User, physics: Group, builtin_local: Backend
) -> None:
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    form = {"name": "here", "kind": "local", "settings": "{}", "max_concurrent": 4, "status": "unknown"}
    response = client.post(
        reverse("admin:backends_backend_change", args=[builtin_local.pk]), {**form, "allowed_groups": [physics.pk]}
    )
    assert response.status_code == 200 and "must name run_as" in response.content.decode()
    assert not builtin_local.allowed_groups.exists()


def test_git_errors_never_carry_the_credentials(user: User, local_backend: Backend, tmp_path: Path) -> None:
    from sources.git import GitError
    from sources.sync import sync_source

    secret_url = "https://robot:ghp_s3cr3tT0ken@127.0.0.1:9/lab/flows.git"
    source = Source.objects.create(name="lab", kind=Source.Kind.GIT, backend=local_backend, url=secret_url)
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error and "ghp_s3cr3tT0ken" not in source.sync_error
    assert "https://robot:***@127.0.0.1:9/lab/flows.git" in source.sync_error
    message = str(GitError(f"fatal: unable to access '{secret_url}/': Failed to connect"))
    assert "ghp_s3cr3tT0ken" not in message
