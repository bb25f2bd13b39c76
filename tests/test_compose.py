"""docker-compose.yml, run as a user would start it, without Docker.

Docker cannot run here, so the test reads the compose file and starts its web, worker and
beat services' own commands and environments as processes on this machine; only what
Docker would provide changes: the hosts "postgres" and "redis" become this machine's
PostgreSQL (a database of the test's own) and Redis (db 2), the /data volume a temporary
directory, port 8000 a free port. Every service's own health check is then run as
compose would run it, and a run is driven end to end through these processes while a
browser on its run page receives the rows pushed over the websocket.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser import chromium_available, launch, login, playwright_api, screenshot
from tests.faults import (
    ADMIN_PASSWORD,
    BIN,
    PG,
    REDIS_DB,
    ROOT,
    Portal,
    create_database,
    drop_database,
    flush_redis,
    ledger_workflow,
)
from tests.services import ChildProcess, ServiceError, accepts_connections, free_port, unavailable
from tests.test_celery import redis_up

needs_redis = pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")

COMPOSE = ROOT / "docker-compose.yml"
PROCESSES = ("web", "worker", "beat")
SHELL_OPERATORS = ("|", "||", "&&", ";")
CONFIG = "backends:\n  - name: local\n    type: local\n    max_concurrent: 4\n    poll_interval: 1\n"


def compose_services() -> dict[str, dict[str, Any]]:
    """The services, with the shared `x-scripthut` block merged in (YAML merge keys)."""
    return yaml.safe_load(COMPOSE.read_text())["services"]


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} (an unset required one fails)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose would refuse to start: {name}: {arg}")
        return arg

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


class Machine:
    """What Docker provides, mapped to this machine."""

    def __init__(self, base: Path, database: str):
        self.data = base / "data"
        self.config = base / "scripthut.yaml"
        self.port = free_port()
        self.database_url = f"{PG}/{database}"
        self.redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"

    def env(self, service: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
        declared = {k: interpolate(str(v), variables) for k, v in service["environment"].items()}
        # The passwords of the postgres and redis services (test_postgres_and_redis_need_passwords...).
        assert (
            declared["DATABASE_URL"] == f"postgres://scripthut:{variables['POSTGRES_PASSWORD']}@postgres:5432/scripthut"
        )
        assert declared["REDIS_URL"] == f"redis://:{variables['REDIS_PASSWORD']}@redis:6379/0"
        assert declared["SCRIPTHUT_DATA_DIR"] == "/data"
        declared |= {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SCRIPTHUT_DATA_DIR": str(self.data),
            "SCRIPTHUT_CONFIG": str(self.config),
        }
        base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        return base | declared | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HOSTNAME": socket.gethostname()}

    def argv(self, words: list[str]) -> list[str]:
        """A command of the image, with this machine's programs, port and data dir."""
        programs = {"scripthut": str(BIN / "scripthut"), "celery": str(BIN / "celery"), "python": sys.executable}
        return [self.word(programs.get(w, w)) for w in words]

    def word(self, word: str) -> str:
        word = word.replace("0.0.0.0", "127.0.0.1").replace("8000", str(self.port))  # noqa: S104
        return re.sub(r"(?<![\w/])/data\b", str(self.data), word)

    def healthcheck(self, service: dict[str, Any]) -> list[str]:
        test = service["healthcheck"]["test"]
        if test[0] == "CMD":
            return self.argv(test[1:])
        assert test[0] == "CMD-SHELL"
        words = shlex.split(test[1].replace("$$", "$"))
        line = " ".join(w if w in SHELL_OPERATORS else shlex.quote(w) for w in self.argv(words))
        return ["sh", "-c", line.replace("'celery@$HOSTNAME'", '"celery@$HOSTNAME"')]


def secrets_of_env_file() -> dict[str, str]:
    """The variables README "Deployment" puts into .env, generated the same way."""
    return {name: secrets.token_urlsafe(32) for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")}


def healthy(command: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(command, env=env, capture_output=True, timeout=60, cwd=ROOT).returncode == 0


def wait_healthy(name: str, command: list[str], env: dict[str, str], portal: Portal, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(command, env):
        child = portal.children.get(name)
        if child and child.proc.poll() is not None:
            raise AssertionError(f"{name} exited {child.proc.returncode}:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}'s health check {command} never passed:\n{child.log_tail() if child else ''}")
        time.sleep(1)


def test_compose_file_declares_the_deployment() -> None:
    services = compose_services()
    assert set(services) == {"postgres", "redis", *PROCESSES}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in PROCESSES:
        volumes = services[name]["volumes"]
        assert "~/.ssh:/home/scripthut/.ssh:ro" in volumes, "SSH keys mounted read-only, as in the original's"
        assert services[name]["user"] == "scripthut", "the portal is not root"
        assert any(v.endswith(":/data") for v in volumes), "the data dir is a volume"
        assert any(v.endswith("/app/scripthut.yaml:ro") for v in volumes)
    assert services["web"]["command"][:2] == ["scripthut", "serve"]
    assert services["worker"]["command"][:2] == ["scripthut", "worker"]
    assert services["beat"]["command"][:2] == ["scripthut", "beat"]
    assert services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]


def test_postgres_and_redis_need_passwords_from_the_environment_and_publish_no_port() -> None:
    # They had none (Redis) or "scripthut" (PostgreSQL), on the network the worker's local tasks share.
    services = compose_services()
    variables = secrets_of_env_file()
    for name in ("postgres", "redis"):
        assert "ports" not in services[name] and "network_mode" not in services[name], f"{name} is published"
    # No password is committed: without them, compose refuses to start any service that needs one.
    for missing in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        given = {k: v for k, v in variables.items() if k != missing}
        needing = [name for name, service in services.items() if missing in json.dumps(service.get("environment", {}))]
        assert set(needing) == {"redis" if missing == "REDIS_PASSWORD" else "postgres", *PROCESSES}
        for name in needing:
            with pytest.raises(AssertionError, match=f"compose would refuse to start: {missing}"):
                [interpolate(str(v), given) for v in services[name]["environment"].values()]
    postgres = {k: interpolate(str(v), variables) for k, v in services["postgres"]["environment"].items()}
    # The image then asks every connection over the network for it (scram-sha-256), unless told to trust.
    assert postgres["POSTGRES_PASSWORD"] == variables["POSTGRES_PASSWORD"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres
    redis = {k: interpolate(str(v), variables) for k, v in services["redis"]["environment"].items()}
    assert redis == {"REDIS_PASSWORD": variables["REDIS_PASSWORD"], "REDISCLI_AUTH": variables["REDIS_PASSWORD"]}
    assert variables["REDIS_PASSWORD"] not in json.dumps(services["redis"]["command"])  # not on its command line


@pytest.mark.services
def test_the_redis_service_as_written_refuses_clients_without_its_password(tmp_path: Path) -> None:
    """The redis service's own command and health check, run here: only the port is this machine's."""
    import redis as redis_client

    service = compose_services()["redis"]
    variables = secrets_of_env_file()
    env = {k: interpolate(str(v), variables) for k, v in service["environment"].items()}
    port = free_port()
    assert service["command"][:2] == ["sh", "-c"]
    script = service["command"][2].replace("$$", "$")
    # What the image provides: its entrypoint (it only drops root for the redis user) and a network of its own.
    here = script.replace(
        "docker-entrypoint.sh redis-server -", f"env redis-server - --port {port} --bind 127.0.0.1 --save ''"
    )
    assert here != script
    try:
        server = ChildProcess.start("redis (compose)", ["sh", "-c", here], tmp_path / "redis.log", env=os.environ | env)
        server.wait_until(lambda: accepts_connections(port), timeout=30)
    except (ServiceError, OSError) as exc:
        unavailable("redis-server", exc)
    try:
        anyone = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        check = ["sh", "-c", service["healthcheck"]["test"][1].replace("redis-cli", f"redis-cli -p {port}")]
        assert subprocess.run(check, env=anyone | env, timeout=30).returncode == 0  # the service's own check
        assert subprocess.run(check, env=anyone, timeout=30).returncode != 0  # without the password
        unasked = subprocess.run(["redis-cli", "-p", str(port), "ping"], env=anyone, capture_output=True, text=True)
        assert "NOAUTH" in unasked.stdout
        with pytest.raises(redis_client.exceptions.RedisError, match="Authentication required"):
            redis_client.Redis(port=port).ping()
        url = interpolate(str(compose_services()["worker"]["environment"]["REDIS_URL"]), variables)
        assert redis_client.Redis.from_url(url.replace("@redis:6379/", f"@127.0.0.1:{port}/")).ping()
    finally:
        server.stop()
    # The redis-server its shell started is gone too (it outlived the test, listening).
    deadline = time.monotonic() + 10
    while accepts_connections(port):
        assert time.monotonic() < deadline, f"redis-server still listens on {port} after its stop"
        time.sleep(0.1)


@pytest.fixture
def deployment(tmp_path: Path):
    database = f"scripthut_faults_compose_{uuid.uuid4().hex[:6]}"
    portal = Portal(tmp_path, database, CONFIG)
    try:
        yield portal
    finally:
        portal.stop_all()
        drop_database(database)


@pytest.mark.faults
@pytest.mark.services
@pytest.mark.browser
@needs_redis
@pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)")
def test_compose_services_run_a_workflow_with_live_pages(deployment: Portal, tmp_path: Path) -> None:
    services = compose_services()
    machine = Machine(tmp_path, deployment.database)
    variables = secrets_of_env_file() | {"SCRIPTHUT_ADMIN_PASSWORD": ADMIN_PASSWORD}
    create_database(deployment.database)
    flush_redis()
    # What the postgres and redis services' own checks say about this machine's servers (the
    # shared test Redis has no password: its check passes without one).
    for name in ("postgres", "redis"):
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"} | {"PGHOST": "127.0.0.1"}
        assert healthy(machine.healthcheck(services[name]), env), name

    envs = {name: machine.env(services[name], variables) for name in PROCESSES}
    deployment.env = envs["web"]
    deployment.web_port = machine.port
    # In compose order: web (it migrates), then worker and beat, each once its check passes.
    deployment.start_web(machine.argv(services["web"]["command"]))
    wait_healthy("web", machine.healthcheck(services["web"]), envs["web"], deployment)
    for name in ("worker", "beat"):
        deployment.start(name, machine.argv(services[name]["command"]), envs[name])
        wait_healthy(name, machine.healthcheck(services[name]), envs[name], deployment)
    deployment.token = deployment.manage("createtoken", "admin").stdout.strip().split()[-1]

    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    workflow = ledger_workflow(ledger, 12, width=4)
    for task in workflow:  # nothing ends before the page is open
        task["deps"] = [*task.get("deps", []), "gate"]
    gated = [{"id": "gate", "name": "gate", "command": f"until [ -e {gate} ]; do sleep 0.1; done"}, *workflow]
    run_id = deployment.start_run(gated, "local", max_concurrent=4)

    from playwright.sync_api import expect

    pushed: list[str] = []
    with playwright_api() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.on(
            "websocket",
            lambda ws: (
                ws.on("framereceived", lambda frame: pushed.append(ws.url)) if ws.url.endswith("/live") else None
            ),
        )
        base = f"http://127.0.0.1:{machine.port}"
        login(page, base, "admin", ADMIN_PASSWORD)
        page.goto(f"{base}/runs/{run_id}")
        page.evaluate("window.__notReloaded = true")
        expect(page.locator("#run-status")).not_to_have_text("completed")
        expect(page.locator("table.tasks .badge.st-completed")).to_have_count(0)
        page.wait_for_timeout(1000)  # the socket is open
        gate.touch()
        # The worker's ticks reach the page through Redis and the web server's socket.
        expect(page.locator("#run-status")).to_have_text("completed", timeout=120_000)
        expect(page.locator("table.tasks .badge.st-completed")).to_have_count(13)
        assert page.evaluate("window.__notReloaded") is True, "the page was reloaded instead of pushed to"
        screenshot(page, "compose-run-completed")
        browser.close()
    assert pushed, "no update was pushed over the run page's websocket"
    assert sorted(ledger.read_text().split()) == sorted(t["id"] for t in workflow)
    assert deployment.task_states(run_id) == {t["id"]: ("completed", "") for t in gated}
