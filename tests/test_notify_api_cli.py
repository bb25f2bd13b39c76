"""A run's own notification settings: ``notify`` in POST /api/runs and ``scripthut run --notify``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs.engine.states import TaskState
from runs.models import Notification, Run, RunNotify
from runs.notify.deliver import deliver_due
from tests.notify_receivers import WebhookReceiver, webhook_server
from tests.test_api import post_json, token_client
from tests.test_cli import home, scripthut  # noqa: F401  (home is a fixture)

pytestmark = pytest.mark.django_db
FAILING = [{"id": "a", "name": "A", "command": "exit 3"}]


def test_api_notify_overrides_the_preferences_for_that_run(user, local_backend, run_to_end):
    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        body = {"backend": "local", "name": "api-wf", "workflow": FAILING, "notify": {"on": "always", "webhook": url}}
        response = post_json(token_client(user), "/api/runs", body)
        assert response.status_code == 201, response.content
        run = Run.objects.get(pk=response.json()["id"])
        assert RunNotify.objects.get(run=run).webhook_url == url
        run_to_end(run)
        deliver_due()
    (request,) = receiver.requests
    assert request["body"]["run_id"] == run.pk and request["body"]["status"] == "failed"
    assert request["body"]["counts"] == dict.fromkeys(TaskState.values, 0) | {"failed": 1}
    assert request["body"]["name"] == "api-wf"
    assert Notification.objects.get().state == "sent"


def test_api_notify_never_silences_a_run(user, local_backend, run_to_end):
    user.email = "alice@example.org"
    user.save()
    body = {"backend": "local", "workflow": FAILING, "notify": {"on": "never"}}
    run = Run.objects.get(pk=post_json(token_client(user), "/api/runs", body).json()["id"])
    run_to_end(run)
    assert not Notification.objects.exists()


def test_api_notify_problems_are_a_400_naming_each_and_create_nothing(user, local_backend):
    notify = {"on": "sometimes", "webhook": "file:///etc/passwd", "email": "not-an-address", "sms": "+1"}
    response = post_json(token_client(user), "/api/runs", {"backend": "local", "workflow": FAILING, "notify": notify})
    assert response.status_code == 400
    error = response.json()["error"]
    for fragment in ("notify.on", "'always', 'failure' or 'never'", "notify.webhook", "http:// or https://"):
        assert fragment in error
    assert "notify.email: not a valid email address" in error and "notify.sms" in error
    assert not Run.objects.exists() and not RunNotify.objects.exists()


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_scripthut_run_notify_sends_the_webhook_when_the_run_fails(home, tmp_path):  # noqa: F811
    env = home | {"SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE": "1", "SCRIPTHUT_PUBLIC_URL": "https://portal.example.org"}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)  # this checkout's code in the subprocesses
    Path(env["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n")
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(FAILING))

    bad = scripthut(env, "run", str(workflow), "--backend", "local", "--notify", "failure",
                    "--notify-webhook", "gopher://x", "--notify-email", "nope", check=False)  # fmt: skip
    assert bad.returncode == 2 and "nothing was submitted" in bad.stderr
    assert "webhook: webhook must be an http:// or https:// URL" in bad.stderr and "email: not a valid" in bad.stderr

    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        done = scripthut(env, "run", str(workflow), "--backend", "local", "--wait", "--notify", "failure",
                         "--notify-webhook", url, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert len(receiver.requests) == 1, done.stdout + done.stderr
    (request,) = receiver.requests
    run_id = request["body"]["run_id"]
    assert request["body"]["event"] == "run.failed" and f"Created run {run_id}" in done.stdout
    assert request["body"]["link"] == f"https://portal.example.org/runs/{run_id}"
