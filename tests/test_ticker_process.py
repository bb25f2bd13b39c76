"""``scripthut serve`` ticks in a child process (runs.workers.ticker_process): the web server's
requests cannot slow the runs, the ticker's changes still reach the pages the server pushes
to, and the ticker never outlives its server nor ticks beside another."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from scripthut_site.serve import WEB_NICENESS
from tests.test_cli import SCRIPTHUT, free_port, http, scripthut
from tests.test_live import _next_event

SESSION = """
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
admin = User.objects.get(username="admin")
session = SessionStore()
session.update({SESSION_KEY: str(admin.pk), HASH_SESSION_KEY: admin.get_session_auth_hash(),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend"})
session.create()
print(session.session_key)
"""


class Served:
    """``scripthut serve`` on a port of its own, in the data dir of ``env``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [SCRIPTHUT, "serve", "--port", str(self.port), "--config", env["SCRIPTHUT_CONFIG"]]
        # A session of its own, so that killing the server alone leaves the child to itself.
        self.process = subprocess.Popen(
            command, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._up, 90, "the portal serving")

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return http(f"{self.base}/health")[0] == 200
        except OSError:
            return False

    def ticker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        tickers = [int(pid) for pid in children if b"runs.workers.ticker_process" in _cmdline(int(pid))]
        assert len(tickers) == 1, f"serve's children: {[_cmdline(int(pid)) for pid in children]}"
        return tickers[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.2)
    return found


@pytest.fixture
def portal_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "SCRIPTHUT_ADMIN_PASSWORD": "admin-pw-123",
    }
    backend = "backends:\n  - name: local\n    type: local\n    max_concurrent: 4\n    poll_interval: 600\n"
    Path(env["SCRIPTHUT_CONFIG"]).write_text(backend)
    yield env


def start_run(base: str, token: str, workflow: list[dict[str, Any]]) -> str:
    status, created = http(f"{base}/api/runs", {"backend": "local", "workflow": workflow}, token)
    assert status == 201, created
    return str(created["id"])


def run_status(base: str, token: str, run_id: str) -> str:
    return str(http(f"{base}/api/runs/{run_id}", token=token)[1]["status"])


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_serve_ticks_in_its_own_process_and_pushes_the_tickers_changes(portal_env, tmp_path):
    served = Served(portal_env, tmp_path / "serve.log")
    try:
        assert served.ticker_pid() != served.process.pid
        # The server yields the CPU to the ticker (and the jobs it starts).
        assert (niceness(served.process.pid), niceness(served.ticker_pid())) == (WEB_NICENESS, 0)
        token = scripthut(portal_env, "createtoken", "admin").stdout.strip()
        session = scripthut(portal_env, "shell", "-c", SESSION).stdout.split()[-1]
        stream = HTTPConnection("127.0.0.1", served.port, timeout=30)
        stream.request("GET", "/jobs/stream", headers={"Cookie": f"sessionid={session}"})
        events = stream.getresponse()
        assert events.status == 200 and events.readline() == b"retry: 3000\n"
        run_id = start_run(served.base, token, [{"id": "one", "name": "one", "command": "echo hi"}])
        # The ticker's process ran the task; the server's stream tells of its end.
        try:
            while True:
                kind, change = _next_event(events)
                if kind == "task" and change["run"] == run_id and change["state"] == "completed":
                    break
        finally:
            stream.close()
    finally:
        served.stop()


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_the_ticker_ends_with_its_server_and_the_next_server_finishes_the_run(portal_env, tmp_path):
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    workflow = [
        {"id": f"t{i}", "name": "t", "command": f"while [ ! -e {gate} ]; do sleep 0.1; done; echo t{i} >> {ledger}"}
        for i in range(6)
    ]
    first = Served(portal_env, tmp_path / "first.log")
    try:
        ticker = first.ticker_pid()
        token = scripthut(portal_env, "createtoken", "admin").stdout.strip()
        run_id = start_run(first.base, token, workflow)
        wait_for(lambda: run_status(first.base, token, run_id) == "running", 60, "the run running")
        first.process.kill()  # kill -9 of the server alone: its ticker is left to itself
        first.process.wait()
        wait_for(lambda: not _cmdline(ticker), 60, "the orphaned ticker exiting")
    finally:
        first.stop()
    second = Served(portal_env, tmp_path / "second.log")
    try:
        gate.touch()
        wait_for(lambda: run_status(second.base, token, run_id) == "completed", 90, "the run completed")
        assert sorted(ledger.read_text().split()) == [f"t{i}" for i in range(6)]  # each task once
    finally:
        second.stop()


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_a_second_server_of_one_data_dir_waits_for_the_first_ticker(portal_env, tmp_path):
    first = Served(portal_env, tmp_path / "first.log")
    second = None
    try:
        token = scripthut(portal_env, "createtoken", "admin").stdout.strip()
        second = Served(portal_env, tmp_path / "second.log")
        wait_for(lambda: "another ticker" in (tmp_path / "second.log").read_text(), 60, "the second ticker waiting")
        first.stop()  # its ticker ends; the second server's takes over
        run_id = start_run(second.base, token, [{"id": "one", "name": "one", "command": "true"}])
        wait_for(lambda: run_status(second.base, token, run_id) == "completed", 60, "the run completed")
    finally:
        first.stop()
        if second:
            second.stop()


def test_the_tickers_changes_cross_as_json_lines():
    from runs.engine.events import RunChange
    from runs.workers.ticker_process import _change, _forwarder

    sent = [RunChange("ab12cd34", frozenset({3, 1, 2}), True), RunChange("ef56", frozenset(), False)]
    pipe = io.BytesIO()
    for change in sent:
        _forwarder(pipe)(change)
    assert [_change(json.loads(line)) for line in pipe.getvalue().splitlines()] == sent


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_a_stop_does_not_wait_for_open_event_streams(portal_env, tmp_path):
    """Ctrl+C with a dashboard open: the server and its ticker end within seconds (they
    waited for the event stream to end itself, 300 s)."""
    served = Served(portal_env, tmp_path / "serve.log")
    ticker = served.ticker_pid()
    session = scripthut(portal_env, "shell", "-c", SESSION).stdout.split()[-1]
    stream = HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        stream.request("GET", "/jobs/stream", headers={"Cookie": f"sessionid={session}"})
        assert stream.getresponse().readline() == b"retry: 3000\n"
        os.killpg(served.process.pid, signal.SIGINT)
        served.process.wait(60)  # STOP_SECONDS is 5; the old server took RECHECK_SECONDS
        wait_for(lambda: not _cmdline(ticker), 30, "the ticker ending")
    finally:
        stream.close()
        served.stop()
