"""A local backend whose users all run as one ``run_as`` account stays possible, but the
config import, the admin and the backend's card on the dashboard say plainly that everyone
on it can read and change each other's jobs (issue 18, finding 1); ``per_user`` says nothing."""

from __future__ import annotations

import html
import pwd

import pytest
import yaml
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from scripthut_site.config import import_config
from tests.conftest import LOCAL_USERS
from tests.os_accounts import ensure_account

SAYS = "can read and change each other's jobs"


@pytest.fixture
def account() -> pwd.struct_passwd:
    return ensure_account("scripthut-runner")


def config(**local: object) -> str:
    backend = {"name": "shared", "type": "local", "allowed_groups": [LOCAL_USERS], **local}
    return yaml.safe_dump({"backends": [backend]})


@pytest.mark.django_db
def test_import_warns_about_a_shared_run_as_account(account: pwd.struct_passwd) -> None:
    report = import_config(config(run_as=account.pw_name))
    (warning,) = [line for line in report.lines() if line.startswith("warning:")]
    assert warning.startswith("warning: backends[0].run_as: 'scripthut-runner': every user of a local backend")
    assert SAYS in warning and "run_as: per_user" in warning
    assert Backend.objects.get(name="shared").settings["run_as"] == account.pw_name  # still possible

    per_user = import_config(config(run_as="per_user", os_user="sh-{username}-t"))
    assert not [line for line in per_user.lines() if line.startswith("warning:")]


@pytest.mark.django_db
def test_the_backends_card_and_the_admin_say_it(client: Client, account: pwd.struct_passwd) -> None:
    backend = Backend.objects.create(name="shared", kind=Backend.Kind.LOCAL, settings={"run_as": account.pw_name})
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    alice = User.objects.create_user("alice", password="pw-alice-123")
    alice.groups.add(Group.objects.get(name=LOCAL_USERS))
    client.force_login(alice)
    card = html.unescape(client.get(reverse("dashboard")).content.decode())
    assert "Everyone on shared runs tasks as one account, scripthut-runner: they " + SAYS in card

    admin = User.objects.create_superuser("root-admin", password="pw-admin-123")
    client.force_login(admin)
    page = html.unescape(client.get(reverse("admin:backends_backend_change", args=[backend.pk])).content.decode())
    assert (
        "Backend 'shared', run_as: 'scripthut-runner': every user of a local backend with one shared run_as account"
        in page
    )
    assert "everyone on the backend can read and change each other's jobs" in page  # the settings' help text

    backend.settings = {"run_as": "per_user"}
    backend.save()
    page = html.unescape(client.get(reverse("admin:backends_backend_change", args=[backend.pk])).content.decode())
    assert "every user of a local backend with one shared" not in page
    client.force_login(alice)
    assert "runs tasks as one account" not in html.unescape(client.get(reverse("dashboard")).content.decode())
