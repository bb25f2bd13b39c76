"""The ``scripthut`` command against a portal (issue 20): a real ``scripthut serve`` process, and
the command run as a separate process from another HOME, with no database settings at all.

Every remote command and its exit code (0 done, 1 failed or cancelled, 2 invalid input, 3 not
allowed, 4 unreachable); a wrong URL, a portal that is down, a TLS error and an expired token
are one line each, with no traceback; and an idempotent POST retried after the connection
dropped mid-answer starts one run (through a proxy that drops the first answer).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripthut_site.client import Client
from tests.markers import require
from tests.test_cli import SCRIPTHUT, free_port, http

REDIS_DB = 7  # this suite's own Redis database (the Celery deployment's broker)

pytestmark = pytest.mark.slow

CELERY = str(Path(sys.executable).with_name("celery"))
GOOD = [
    {"id": "prep", "name": "Prep", "command": "echo prepared"},
    {"id": "sim/1.a", "name": "S1", "command": "echo one; echo warn >&2", "deps": ["prep"]},
]


class Portal:
    def __init__(self, base: str, host_env: dict[str, str], admin: str, bob: str) -> None:
        self.base, self.host_env, self.admin, self.bob = base, host_env, admin, bob


def _host(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([SCRIPTHUT, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@contextmanager
def running_portal(base_dir: Path, redis_url: str = "") -> Iterator[Portal]:
    """``scripthut serve`` with a local backend, a path source and a configured workflow: embedded,
    or with ``redis_url`` the Celery deployment (a worker with beat runs the ticks)."""
    flows = base_dir / "flows" / "sims"
    flows.mkdir(parents=True)
    (flows / "two.json").write_text(json.dumps(GOOD))
    config = base_dir / "scripthut.yaml"
    config.write_text(
        "backends:\n  - name: local\n    type: local\n    max_concurrent: 4\n    poll_interval: 1\n"
        f"sources:\n  - name: flows\n    type: path\n    path: {base_dir / 'flows'}\n    backend: local\n"
        "    workflows_glob: '*/*.json'\n"
        f"workflows:\n  - name: nightly\n    backend: local\n    command: cat {flows / 'two.json'}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "SCRIPTHUT_DATA_DIR": str(base_dir / "data"),
        "SCRIPTHUT_CONFIG": str(config),
        "SCRIPTHUT_ADMIN_PASSWORD": "admin-pw-123",
    } | ({"REDIS_URL": redis_url} if redis_url else {})
    port = free_port()
    children = [
        subprocess.Popen(
            [SCRIPTHUT, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                http(f"{base}/health")
                break
            except OSError:
                assert children[0].poll() is None, children[0].stdout.read() if children[0].stdout else ""
                assert time.monotonic() < deadline, "portal did not start"
                time.sleep(0.3)
        if redis_url:
            schedule = str(base_dir / "beat-schedule")
            worker = [CELERY, "-A", "scripthut_site", "worker", "--beat", "--pool", "solo", "--schedule", schedule]
            log = (base_dir / "worker.log").open("w")
            children.append(subprocess.Popen(worker, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
        create_bob = "from django.contrib.auth.models import User; User.objects.create_user('bob', password='pw-b-123')"
        _host(env, "shell", "-c", create_bob)
        yield Portal(base, env, _host(env, "createtoken", "admin"), _host(env, "createtoken", "bob"))
    finally:
        for child in reversed(children):
            child.terminate()
            child.communicate(timeout=30)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    with running_portal(tmp_path_factory.mktemp("portal")) as embedded:
        yield embedded


@pytest.fixture
def laptop(tmp_path: Path) -> dict[str, str]:
    """Another HOME, no database, no portal settings: a researcher's laptop."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL")
    env = {k: v for k, v in os.environ.items() if k in keep}
    (tmp_path / "home").mkdir()
    return env | {"HOME": str(tmp_path / "home")}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SCRIPTHUT, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_login_then_every_command(portal: Portal, laptop: dict[str, str], tmp_path: Path) -> None:
    assert cli(laptop, "whoami").returncode == 2  # not logged in: says how
    login = cli(laptop, "login", portal.base, "--token", portal.admin)
    assert login.returncode == 0 and "as admin" in login.stdout
    saved = Path(laptop["HOME"]) / ".config" / "scripthut" / "credentials"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": portal.base, "token": portal.admin}

    me = json.loads(cli(laptop, "whoami", "--json").stdout)
    assert me["username"] == "admin" and me["backends"] == ["local"]
    assert [b["name"] for b in json.loads(cli(laptop, "backends", "--json").stdout)] == ["local"]

    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    done = cli(laptop, "run", str(good), "--backend", "local", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Created run " in done.stdout and "completed." in done.stdout
    run_id = done.stdout.split("Created run ", 1)[1].split()[0]
    status = json.loads(cli(laptop, "status", run_id, "--json").stdout)
    assert status["status"] == "completed" and status["workflow_name"] == "good"
    assert cli(laptop, "logs", run_id, "sim/1.a").stdout == "one\n"
    assert cli(laptop, "logs", run_id, "sim/1.a", "--error").stdout == "warn\n"
    assert cli(laptop, "logs", run_id, "sim/1.a", "--follow").stdout == "one\n"  # ended: all of it, then stops
    assert run_id in cli(laptop, "runs").stdout
    assert [r["id"] for r in json.loads(cli(laptop, "runs", "--status", "completed", "--json").stdout)["items"]] == [
        run_id
    ]

    failing = tmp_path / "fails.json"
    failing.write_text(json.dumps([{"id": "x", "name": "X", "command": "exit 5"}]))
    failed = cli(laptop, "run", str(failing), "--backend", "local", "--wait")
    assert failed.returncode == 1 and "x: failed exit code 5" in failed.stdout
    failed_id = failed.stdout.split("Created run ", 1)[1].split()[0]
    relaunched = cli(laptop, "relaunch", failed_id)
    assert relaunched.returncode == 0 and "Relaunched 1 task(s)" in relaunched.stdout

    cyclic = tmp_path / "cycle.json"
    cyclic.write_text(json.dumps([{"id": "a", "name": "A", "command": "true", "deps": ["a"]}]))
    refused = cli(laptop, "run", str(cyclic), "--backend", "local")
    assert refused.returncode == 2 and "dependency cycle: a -> a" in refused.stderr
    assert cli(laptop, "run", str(good), "--backend", "nope").returncode == 2
    assert cli(laptop, "run", str(tmp_path / "missing.json"), "--backend", "local").returncode == 2

    long = tmp_path / "long.json"
    long.write_text(json.dumps([{"id": "w", "name": "W", "command": "sleep 60"}]))
    started = cli(laptop, "run", str(long), "--backend", "local", "--json")
    long_id = json.loads(started.stdout)["id"]
    assert cli(laptop, "cancel", long_id, "w").returncode == 0
    assert cli(laptop, "cancel", long_id).returncode in (0, 2)  # 2: the task's cancel already ended the run
    assert cli(laptop, "status", long_id).returncode == 0

    synced = cli(laptop, "sync", "flows")
    assert synced.returncode == 0 and "1 workflow file(s)" in synced.stdout
    assert json.loads(cli(laptop, "sources", "--json").stdout)[0]["workflow_files"] == ["sims/two.json"]
    from_source = cli(laptop, "run", "--source", "flows", "sims/two.json", "--wait")
    assert from_source.returncode == 0, from_source.stdout + from_source.stderr
    assert [w["name"] for w in json.loads(cli(laptop, "workflows", "--json").stdout)] == ["nightly"]
    assert cli(laptop, "run", "--workflow", "nightly", "--wait").returncode == 0


def test_env_without_a_file_and_refusals(portal: Portal, laptop: dict[str, str], tmp_path: Path) -> None:
    as_bob = laptop | {"SCRIPTHUT_URL": portal.base, "SCRIPTHUT_TOKEN": portal.bob}
    assert json.loads(cli(as_bob, "whoami", "--json").stdout)["username"] == "bob"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    refused = cli(as_bob, "run", str(good), "--backend", "local")
    assert refused.returncode == 3
    assert "only staff may use it" in one_line(refused)
    assert not (Path(laptop["HOME"]) / ".config").exists()


def test_bad_places_and_tokens_are_one_line(portal: Portal, laptop: dict[str, str]) -> None:
    down = free_port()
    cases = {
        f"http://127.0.0.1:{down}": (4, "cannot reach the portal"),
        f"https://127.0.0.1:{portal.base.rsplit(':', 1)[1]}": (4, "TLS error"),
        f"{portal.base}/not-here": (2, "does not look like a ScriptHut portal"),
        "ftp://example.org": (2, "not a portal URL"),
    }
    for url, (code, fragment) in cases.items():
        proc = cli(laptop | {"SCRIPTHUT_URL": url, "SCRIPTHUT_TOKEN": portal.admin}, "runs")
        assert proc.returncode == code, (url, proc.stderr)
        assert fragment in one_line(proc), url
    tokenless = cli(laptop | {"SCRIPTHUT_URL": portal.base}, "whoami")
    assert tokenless.returncode == 2 and "no API token for" in one_line(tokenless)
    wrong = cli(laptop | {"SCRIPTHUT_URL": portal.base, "SCRIPTHUT_TOKEN": "nope"}, "whoami")
    assert wrong.returncode == 3 and one_line(wrong) == "scripthut: invalid API token"
    expire = (
        "from datetime import timedelta; from django.utils import timezone; from runs.models import ApiToken; "
        "ApiToken.objects.filter(key_hash=ApiToken.hash_key('KEY'))"
        ".update(expires_at=timezone.now() - timedelta(days=1))"
    )
    key = _host(portal.host_env, "createtoken", "bob")
    _host(portal.host_env, "shell", "-c", expire.replace("KEY", key))
    expired = cli(laptop | {"SCRIPTHUT_URL": portal.base, "SCRIPTHUT_TOKEN": key}, "whoami")
    assert expired.returncode == 3 and "expired on" in one_line(expired)


class DroppingProxy:
    """Forwards HTTP to the portal, one request per connection; the first POST is forwarded and
    its answer read, then the client's connection is closed without it (a drop mid-answer)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.dropped = 0
        self.posts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        while len(body) < length:
            body += conn.recv(65536)
        head = b"\r\n".join(h for h in head.split(b"\r\n") if not h.lower().startswith(b"connection")) + (
            b"\r\nConnection: close"
        )
        with socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
            upstream.sendall(head + b"\r\n\r\n" + body)
            answer = b""
            while chunk := upstream.recv(65536):
                answer += chunk
        if head.startswith(b"POST"):
            self.posts += 1
            if self.dropped == 0:
                self.dropped += 1
                conn.sendall(answer[:20])  # part of the status line, then the connection drops
                return
        conn.sendall(answer)

    def close(self) -> None:
        self.server.close()


def test_an_idempotent_post_retried_after_a_drop_starts_one_run(portal: Portal) -> None:
    port = int(portal.base.rsplit(":", 1)[1])
    proxy = DroppingProxy(port)
    try:
        before = http(f"{portal.base}/api/runs", token=portal.admin)[1]["count"]
        with Client(f"http://127.0.0.1:{proxy.port}", portal.admin, backoff=0.05) as client:
            created = client.run(GOOD, backend="local", name="retried")
        assert proxy.dropped == 1 and proxy.posts == 2  # sent twice, with one key
        assert created["replayed"] is True
        after = http(f"{portal.base}/api/runs", token=portal.admin)[1]
        assert after["count"] == before + 1
        assert after["items"][0]["id"] == created["id"]
    finally:
        proxy.close()


@pytest.mark.services
def test_the_command_against_a_celery_deployment(laptop: dict[str, str], tmp_path: Path) -> None:
    require("services", "the shared Redis")
    with running_portal(tmp_path / "portal", redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}") as celery:
        env = laptop | {"SCRIPTHUT_URL": celery.base, "SCRIPTHUT_TOKEN": celery.admin}
        good = tmp_path / "good.json"
        good.write_text(json.dumps(GOOD))
        done = cli(env, "run", str(good), "--backend", "local", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = done.stdout.split("Created run ", 1)[1].split()[0]
        assert cli(env, "logs", run_id, "sim/1.a", "--follow").stdout == "one\n"
        refused = cli(laptop | {"SCRIPTHUT_URL": celery.base, "SCRIPTHUT_TOKEN": celery.bob}, "run", str(good),
                      "--backend", "local")  # fmt: skip
        assert refused.returncode == 3 and "only staff may use it" in one_line(refused)
