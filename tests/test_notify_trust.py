"""Issue 18, finding 4: the portal mails only addresses it trusts, and a run's name cannot pose as its words.

Trusted for a user: the account's address, an address they confirmed through a link the
portal emailed to it, and addresses in SCRIPTHUT_NOTIFY_EMAIL_DOMAINS. The mail goes to a
real SMTP server (aiosmtpd, tests/notify_receivers.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.engine.run_status import refresh_run_status
from runs.engine.states import TaskState
from runs.models import Notification, NotificationPreference, Run, RunNotify, Task, VerifiedEmail
from runs.notify.deliver import deliver_due
from runs.notify.outbox import channels_for
from tests.notify_receivers import SmtpServer, smtp_server
from tests.test_api import post_json, token_client
from tests.test_cli import home, scripthut  # noqa: F401  (home is a fixture)
from tests.test_notify_delivery import notify_config, real_smtp

pytestmark = pytest.mark.django_db
FAILING = [{"id": "a", "name": "A", "command": "exit 3"}]
STRANGER = "victim@elsewhere.test"  # in no allowed domain, confirmed by nobody
PHISH = "URGENT: your account is locked, log in at http://evil.test/login now"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    yield from smtp_server(tmp_path)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def fail(run: Run) -> None:
    Task.objects.filter(run=run).update(state=TaskState.FAILED)
    refresh_run_status(run.pk)


def test_the_api_refuses_an_address_the_portal_does_not_trust_and_creates_nothing(
    user: User, local_backend: Backend
) -> None:
    body = {"backend": "local", "workflow": FAILING, "notify": {"email": STRANGER}}
    response = post_json(token_client(user), "/api/runs", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert f"notify.email: {STRANGER} is not an address the portal trusts for you" in error
    assert "SCRIPTHUT_NOTIFY_EMAIL_DOMAINS" in error
    assert not Run.objects.exists() and not RunNotify.objects.exists()

    user.email = "alice@lab.test"  # the account's own address (set by staff, LDAP or OIDC)
    user.save()
    body["notify"] = {"email": "Alice@Lab.test"}
    assert post_json(token_client(user), "/api/runs", body).status_code == 201
    with notify_config(email_domains=("lab.test", "guest@partner.test")):
        for allowed in ("bob@lab.test", "bob@hpc.lab.test", "guest@partner.test"):
            body["notify"] = {"email": allowed}
            assert post_json(token_client(user), "/api/runs", body).status_code == 201, allowed
        body["notify"] = {"email": "other@partner.test"}
        assert post_json(token_client(user), "/api/runs", body).status_code == 400


def test_the_preferences_page_refuses_it_naming_it(user: User) -> None:
    response = signed_in(user).post("/settings/notifications", {"on": "always", "email": STRANGER})
    page = response.content.decode()
    assert response.status_code == 400 and "Nothing was saved" in page
    assert f"{STRANGER} is not an address the portal trusts for you" in page
    assert not NotificationPreference.objects.exists()


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_scripthut_run_refuses_it_with_exit_2(home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = home | {"PYTHONPATH": str(Path(__file__).parent.parent), "SCRIPTHUT_NOTIFY_EMAIL_DOMAINS": "lab.test"}
    Path(env["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n")
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(FAILING))
    run = ("run", str(workflow), "--backend", "local", "--user", "admin", "--notify-email")

    refused = scripthut(env, *run, STRANGER, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"email: {STRANGER} is not an address the portal trusts for you" in refused.stderr
    assert "nothing was submitted" in refused.stderr and "Created run" not in refused.stdout
    for trusted in ("admin@example.com", "someone@lab.test"):  # the account's; the allowed domain
        assert "Created run" in scripthut(env, *run, trusted).stdout


def test_an_untrusted_address_stored_before_is_skipped_for_the_accounts(user: User, local_backend: Backend) -> None:
    user.email = "alice@lab.test"
    user.save()
    NotificationPreference.objects.create(user=user, on="always", email=STRANGER)  # written before these rules
    assert channels_for(user).email == "alice@lab.test"
    fail(create_run(owner=user, backend=local_backend, payload=FAILING, workflow_name="wf"))
    assert list(Notification.objects.values_list("target", flat=True)) == ["alice@lab.test"]


def unfolded(header: str) -> str:
    """A header as written, before the mail server folded its long line."""
    return re.sub(r"\r?\n", "", header)


def confirmation_path(smtp: SmtpServer, to: str) -> str:
    (message,) = [m for m in smtp.messages() if m["To"] == to]
    assert message["Subject"] == "ScriptHut: confirm your email address"
    found = re.search(r"(/settings/notifications/confirm/\S+)", str(message.get_payload()))
    assert found, message.get_payload()
    return found.group(1)


def test_a_confirmed_address_receives_the_notifications_with_the_run_name_quoted_and_cut(
    user: User, bob: User, local_backend: Backend, smtp: SmtpServer
) -> None:
    alice = signed_in(user)
    mine = "alice.private@home.test"
    assert alice.post("/settings/notifications", {"on": "always", "email": mine}).status_code == 400
    assert alice.post("/settings/notifications/confirm", {"address": mine}).status_code == 302
    with real_smtp(smtp):
        assert deliver_due() == 1
    link = confirmation_path(smtp, mine)

    # The link is alice's: bob cannot use it to receive alice's mail, nor to confirm it for himself.
    assert signed_in(bob).post(link).status_code == 400
    assert "sent for another account" in signed_in(bob).get(link).content.decode()
    assert mine in alice.get(link).content.decode() and not VerifiedEmail.objects.exists()  # a GET changes nothing
    assert alice.post(link).status_code == 302
    assert list(VerifiedEmail.objects.values_list("user__username", "address")) == [("alice", mine)]
    assert alice.post("/settings/notifications", {"on": "always", "email": mine}).status_code == 302
    assert mine in alice.get("/settings/notifications").content.decode()

    run = create_run(owner=user, backend=local_backend, payload=FAILING, workflow_name=PHISH)
    fail(run)
    with real_smtp(smtp):
        assert deliver_due() == 1
    (message,) = [m for m in smtp.messages() if m["Subject"] != "ScriptHut: confirm your email address"]
    assert message["To"] == mine
    assert (
        unfolded(message["Subject"]) == f'ScriptHut: run "URGENT: your account is locked, log i..." ({run.pk}) failed'
    )
    assert f'Name: "{PHISH}"' in message.get_payload()  # quoted in the body too


def test_a_confirmation_link_expires_and_cannot_be_forged(user: User, smtp: SmtpServer, time_machine: Any) -> None:
    alice = signed_in(user)
    time_machine.move_to(timezone.now(), tick=False)
    alice.post("/settings/notifications/confirm", {"address": "late@home.test"})
    with real_smtp(smtp):
        deliver_due()
    link = confirmation_path(smtp, "late@home.test")
    assert "not a confirmation link" in alice.get(link[:-3] + "abc").content.decode()
    time_machine.shift(timedelta(days=2, seconds=1))
    answer = alice.post(link)
    assert answer.status_code == 400 and "expired" in answer.content.decode()
    assert not VerifiedEmail.objects.exists()


def test_confirmations_are_limited_per_day(user: User) -> None:
    alice = signed_in(user)
    for n in range(5):
        assert alice.post("/settings/notifications/confirm", {"address": f"a{n}@home.test"}).status_code == 302
    answer = alice.post("/settings/notifications/confirm", {"address": "a5@home.test"})
    assert answer.status_code == 400 and "try again tomorrow" in answer.content.decode()
    assert Notification.objects.filter(event="email.confirm").count() == 5
