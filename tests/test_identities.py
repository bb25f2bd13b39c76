"""Per-user cluster identities without a cluster: keys, the settings page, refusals,
adapters per identity, and the engine ticking a per_user backend once per owner.

The same on a real Slurm with two Unix users: tests/test_slurm_identities.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from backends import registry
from backends.base import (
    BackendAdapter,
    BackendError,
    BackendUnavailable,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    TaskLog,
)
from backends.config import validate_backend_settings
from backends.identity import NoIdentity
from backends.models import Backend, ClusterIdentity
from backends.slurm.adapter import SlurmAdapter
from backends.ssh.keys import KeyProblem, load_key
from runs.actions import cancel_run, create_run
from runs.engine import tick as tick_module
from runs.engine.tick import cycle
from runs.engine.waiting import shown_reason
from runs.models import ApiToken, AuditEvent, Run, Workflow
from runs.workflows.parse import WorkflowError

pytestmark = pytest.mark.django_db

NO_IDENTITY = "no cluster identity for hpc: add one at /settings/identities"


def new_key(passphrase: str = "") -> tuple[str, str]:
    """(private key in OpenSSH format, its public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private.decode(), public.decode()


def key_lines(private_key: str) -> list[str]:
    """The base64 lines of a key: none may ever appear in a page."""
    return [line for line in private_key.splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def hpc(db: None) -> Backend:
    ssh = {"host": "127.0.0.1", "port": 9, "identity": "per_user"}
    return Backend.objects.create(
        name="hpc", kind="slurm", settings=validate_backend_settings("slurm", {"ssh": ssh}), max_concurrent=3
    )


@pytest.fixture(autouse=True)
def fresh_adapters() -> Iterator[None]:
    yield
    registry.close_all()


def add_identity(user: User, backend: Backend, username: str, passphrase: str = "") -> ClusterIdentity:
    private, _ = new_key(passphrase)
    fingerprint = load_key(private, passphrase).fingerprint
    return ClusterIdentity.objects.create(
        user=user,
        backend=backend,
        username=username,
        private_key=private,
        passphrase=passphrase,
        fingerprint=fingerprint,
    )


# -- keys ------------------------------------------------------------------------------------


def problem(private_key: str, passphrase: str = "", certificate: str = "") -> tuple[str, str]:
    with pytest.raises(KeyProblem) as caught:
        load_key(private_key, passphrase, certificate)
    return caught.value.field, str(caught.value)


def test_keys_load_in_memory_and_problems_name_their_field() -> None:
    plain, public = new_key()
    assert load_key(plain).fingerprint.startswith("SHA256:")
    encrypted, _ = new_key("s3cret passphrase")
    assert load_key(encrypted, "s3cret passphrase").get_name() == "ssh-ed25519"
    assert problem(encrypted) == ("passphrase", "this key is encrypted: enter its passphrase")
    assert problem(encrypted, "wrong") == ("passphrase", "wrong passphrase for this key")
    assert problem(plain, "unneeded")[0] == "passphrase"
    assert problem(public)[0] == "private_key" and "public key" in problem(public)[1]
    assert problem("hello")[0] == "private_key"
    # A "certificate" naming a file on the portal host is not read as that file.
    assert problem(plain, certificate="/etc/passwd")[0] == "certificate"
    assert problem(plain, certificate=public)[0] == "certificate"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen to sign a certificate")
def test_a_certificate_goes_with_its_key(tmp_path: Path) -> None:
    private, public = new_key()
    (tmp_path / "id.pub").write_text(public)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "t", "-n", "hut", str(tmp_path / "id.pub")], check=True
    )
    certificate = (tmp_path / "id-cert.pub").read_text()
    pkey = load_key(private, certificate=certificate)
    assert pkey.public_blob is not None and pkey.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"


# -- the settings page -------------------------------------------------------------------------


@pytest.fixture
def alice_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_settings_page_stores_the_key_encrypted_and_never_shows_it(
    alice_client: Client, user: User, hpc: Backend
) -> None:
    page = alice_client.get("/settings/identities")
    assert page.status_code == 200 and "You have no identity here yet" in page.content.decode()
    assert 'href="/settings/identities"' in page.content.decode()  # in the navigation
    private, _ = new_key("pass phrase")
    saved = alice_client.post(
        "/settings/identities/hpc", {"username": "hut", "private_key": private, "passphrase": "pass phrase"}
    )
    assert saved.status_code == 302
    identity = ClusterIdentity.objects.get(user=user, backend=hpc)
    assert identity.private_key.strip() == private.strip() and identity.passphrase == "pass phrase"
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key, passphrase FROM backends_clusteridentity")
        stored = " ".join(cursor.fetchone())
    assert "pass phrase" not in stored and not any(line in stored for line in key_lines(private))
    html = alice_client.get("/settings/identities").content.decode()
    assert identity.fingerprint in html and "Replace key" in html
    assert not any(line in html for line in key_lines(private)) and "pass phrase" not in html

    # A new username alone keeps the key.
    assert alice_client.post("/settings/identities/hpc", {"username": "hut9"}).status_code == 302
    identity.refresh_from_db()
    assert identity.username == "hut9" and identity.private_key.strip() == private.strip()
    assert alice_client.post("/settings/identities/hpc/delete").status_code == 302
    assert not ClusterIdentity.objects.exists()


@pytest.mark.parametrize(
    ("passphrase", "field", "message"),
    [("", "Passphrase", "enter its passphrase"), ("nope", "Passphrase", "wrong passphrase")],
)
def test_a_bad_key_is_a_form_error_that_does_not_echo_the_key(
    alice_client: Client, hpc: Backend, passphrase: str, field: str, message: str
) -> None:
    private, _ = new_key("right one")
    answer = alice_client.post(
        "/settings/identities/hpc", {"username": "hut", "private_key": private, "passphrase": passphrase}
    )
    html = answer.content.decode()
    assert answer.status_code == 400 and f"{field}: " in html and message in html
    assert not any(line in html for line in key_lines(private))
    assert not ClusterIdentity.objects.exists()


def test_a_public_key_is_refused_on_the_private_key_field(alice_client: Client, hpc: Backend) -> None:
    _, public = new_key()
    answer = alice_client.post("/settings/identities/hpc", {"username": "hut", "private_key": public})
    assert answer.status_code == 400 and "Private key: this is a public key" in answer.content.decode()


def test_shared_backends_take_no_identity(alice_client: Client, local_backend: Backend) -> None:
    assert alice_client.post("/settings/identities/local", {"username": "x"}).status_code == 404


def test_users_see_only_their_own_identities(alice_client: Client, bob: User, hpc: Backend) -> None:
    theirs = add_identity(bob, hpc, "bobs-login")
    html = alice_client.get("/settings/identities").content.decode()
    assert theirs.fingerprint not in html and "bobs-login" not in html


def test_identity_changes_are_audited_without_the_key(user: User, hpc: Backend) -> None:
    identity = add_identity(user, hpc, "hut")
    identity.delete()
    events = list(AuditEvent.objects.filter(action=AuditEvent.Action.IDENTITY_CHANGED).order_by("id"))
    assert [e.target for e in events] == ["cluster identity of alice on hpc"] * 2
    assert [e.detail["change"] for e in events] == ["created", "deleted"]
    assert not any(line in json.dumps([e.detail for e in events]) for line in key_lines(identity.private_key))


def test_admin_lists_identities_without_secrets(staff: User, user: User, hpc: Backend) -> None:
    staff.is_superuser = True
    staff.save()
    identity = add_identity(user, hpc, "hut", passphrase="admin must not see")
    client = Client()
    client.force_login(staff)
    for url in ("/admin/backends/clusteridentity/", f"/admin/backends/clusteridentity/{identity.pk}/change/"):
        html = client.get(url).content.decode()
        assert identity.fingerprint in html and "admin must not see" not in html
        assert not any(line in html for line in key_lines(identity.private_key))
    assert client.get("/admin/backends/clusteridentity/add/").status_code == 403


# -- refusing runs that could never be submitted -------------------------------------------------


def test_a_run_without_an_identity_is_refused(user: User, hpc: Backend) -> None:
    token = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    body = {"backend": "hpc", "workflow": [{"id": "a", "name": "a", "command": "true"}]}
    answer = token.post("/api/runs", data=json.dumps(body), content_type="application/json")
    assert answer.status_code == 400 and "/settings/identities" in answer.json()["error"]
    with pytest.raises(WorkflowError, match="add your cluster username and SSH key at /settings/identities"):
        create_run(owner=user, backend=hpc, payload=body["workflow"], workflow_name="w")
    assert not Run.objects.exists()
    add_identity(user, hpc, "hut")
    assert token.post("/api/runs", data=json.dumps(body), content_type="application/json").status_code == 201


def test_the_run_button_says_how_to_add_one(alice_client: Client, hpc: Backend) -> None:
    Workflow.objects.create(name="wf", backend=hpc, command="echo '[]'")
    answer = alice_client.post("/workflows/wf/run", follow=True)
    assert "/settings/identities" in answer.content.decode() and not Run.objects.exists()


# -- adapters per identity ----------------------------------------------------------------------


def test_one_adapter_per_identity_logging_in_with_the_key_in_memory(user: User, bob: User, hpc: Backend) -> None:
    alice_id, bob_id = add_identity(user, hpc, "hut"), add_identity(bob, hpc, "hut2")
    alice = registry.get_adapter(hpc, alice_id)
    assert isinstance(alice, SlurmAdapter)
    assert registry.get_adapter(hpc, alice_id) is alice
    assert registry.get_adapter(hpc, bob_id) is not alice and registry.get_adapter(hpc) is not alice
    transport = alice.transport
    assert (transport.user, transport.key_path, transport.cert_path) == ("hut", None, None)
    assert transport.pkey is not None and transport.pkey.fingerprint == alice_id.fingerprint
    options = transport._connect_options(transport.pkey)
    assert options["pkey"] is transport.pkey and not options["allow_agent"] and not options["look_for_keys"]
    alice_id.username = "hut3"
    alice_id.save()
    assert registry.get_adapter(hpc, alice_id) is not alice  # a changed identity: a new connection


def test_logs_are_read_as_the_runs_owner(user: User, hpc: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = add_identity(user, hpc, "hut")
    owners = registry.get_adapter(hpc, identity)
    monkeypatch.setattr(owners, "read_file", lambda path, max_bytes: f"{path} read as hut")
    log = TaskLog(job_id="1", stream="output", path="~/out", working_dir="~", owner_id=user.pk)
    # Whoever asks (the shared adapter, as for an admin's page view) reads it as its owner.
    assert registry.get_adapter(hpc).read_log(log) == "~/out read as hut"
    identity.delete()
    with pytest.raises(NoIdentity, match="/settings/identities"):
        registry.get_adapter(hpc).read_log(log)


# -- the engine: once per owner, each with their own adapter ----------------------------------


class FakeScheduler(BackendAdapter):
    """Records what each identity's adapter was asked to do."""

    def __init__(self, login: str):
        self.name = self.login = login
        self.settings: dict[str, str] = {}
        self.submitted: list[str] = []
        self.polled: list[str] = []
        self.cancelled: list[str] = []

    def render_script(self, job: JobSpec) -> str:
        return f"#!/bin/bash\n{job.command}\n"

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        self.submitted += [job.task_id for job, _ in jobs]
        return [SubmitResult(tag=job.tag, job_id=f"{self.login}-{job.task_id}") for job, _ in jobs]

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        self.polled += job_ids
        return PollResult({j: JobStatus(j, JobState.RUNNING, user=self.login) for j in job_ids})

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        return {}

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancelled += job_ids

    def log_location(self, log: TaskLog) -> str:
        return log.path

    def read_log(self, log: TaskLog, max_bytes: int = 0) -> str:
        return ""


def test_the_tick_works_once_per_owner_as_that_owner(
    user: User, bob: User, staff: User, hpc: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = {"hut": FakeScheduler("hut"), "hut2": FakeScheduler("hut2")}
    monkeypatch.setattr(tick_module, "get_adapter", lambda backend, identity: fakes[identity.username])
    monkeypatch.setattr(tick_module, "refresh_cluster_info", lambda backend, adapter: None)
    add_identity(user, hpc, "hut")
    add_identity(bob, hpc, "hut2")
    carols = add_identity(staff, hpc, "gone")
    two = [{"id": f"t{n}", "name": "t", "command": "true"} for n in range(2)]
    alices = create_run(owner=user, backend=hpc, payload=two, workflow_name="a")
    bobs = create_run(owner=bob, backend=hpc, payload=two, workflow_name="b")
    carol_run = create_run(owner=staff, backend=hpc, payload=two[:1], workflow_name="c")
    carols.delete()  # her run stays, and waits

    cycle(hpc)
    # max_concurrent (3) is the backend's: the oldest run's owner goes first.
    assert (fakes["hut"].submitted, fakes["hut2"].submitted) == (["t0", "t1"], ["t0"])
    waiting = Run.objects.get(pk=carol_run.pk).tasks.get()
    assert (waiting.state, shown_reason(waiting)) == ("pending", NO_IDENTITY)
    hpc.refresh_from_db()
    assert hpc.status == Backend.Status.OK

    cancel_run(alices)
    cycle(hpc)
    assert fakes["hut"].cancelled == ["hut-t0", "hut-t1"] and fakes["hut2"].cancelled == []
    assert fakes["hut2"].polled == ["hut2-t0"]  # bob's adapter never hears of alice's jobs
    assert fakes["hut2"].submitted == ["t0", "t1"]  # alice's cancelled jobs gave back their slots
    assert dict(bobs.tasks.values_list("task_id", "state")) == {"t0": "running", "t1": "submitted"}


def test_an_owner_whose_login_fails_holds_up_only_their_own_tasks(
    user: User, bob: User, hpc: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = FakeScheduler("hut2")

    def adapter(backend: Backend, identity: ClusterIdentity) -> BackendAdapter:
        if identity.username == "hut":
            raise BackendUnavailable("authentication failed for hut@127.0.0.1:9")
        return working

    monkeypatch.setattr(tick_module, "get_adapter", adapter)
    monkeypatch.setattr(tick_module, "refresh_cluster_info", lambda backend, adapter: None)
    add_identity(user, hpc, "hut")
    one = [{"id": "t", "name": "t", "command": "true"}]
    alices = create_run(owner=user, backend=hpc, payload=one, workflow_name="a")
    cycle(hpc)
    hpc.refresh_from_db()
    assert hpc.status == Backend.Status.UNREACHABLE  # nobody could log in
    add_identity(bob, hpc, "hut2")
    bobs = create_run(owner=bob, backend=hpc, payload=one, workflow_name="b")
    cycle(hpc)
    hpc.refresh_from_db()
    assert hpc.status == Backend.Status.OK and working.submitted == ["t"]
    assert bobs.tasks.get().state == "submitted"
    assert (
        shown_reason(Run.objects.get(pk=alices.pk).tasks.get())
        == "waiting for hpc as hut: authentication failed for hut@127.0.0.1:9"
    )


def test_an_owner_whose_account_cannot_work_holds_up_only_their_own_tasks(
    user: User, bob: User, hpc: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's account logs in but cannot do its work (here: no home directory); Bob,
    whose run is newer and so ticks after hers, still gets his task submitted."""
    working = FakeScheduler("hut2")

    class Broken(FakeScheduler):
        def poll(self, job_ids: Sequence[str]) -> PollResult:
            raise BackendError("cannot find the home directory on hpc")

    def adapter(backend: Backend, identity: ClusterIdentity) -> BackendAdapter:
        return Broken("hut") if identity.username == "hut" else working

    monkeypatch.setattr(tick_module, "get_adapter", adapter)
    monkeypatch.setattr(tick_module, "refresh_cluster_info", lambda backend, adapter: None)
    add_identity(user, hpc, "hut")
    add_identity(bob, hpc, "hut2")
    one = [{"id": "t", "name": "t", "command": "true"}]
    alices = create_run(owner=user, backend=hpc, payload=one, workflow_name="a")
    bobs = create_run(owner=bob, backend=hpc, payload=one, workflow_name="b")
    cycle(hpc)
    hpc.refresh_from_db()
    assert hpc.status == Backend.Status.OK and working.submitted == ["t"]
    assert bobs.tasks.get().state == "submitted"
    assert (
        shown_reason(Run.objects.get(pk=alices.pk).tasks.get())
        == "waiting for hpc as hut: cannot find the home directory on hpc"
    )
