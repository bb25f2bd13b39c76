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

import os
import re
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

from tests.browser import chromium_available, launch, login, screenshot
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
from tests.services import free_port
from tests.test_celery import redis_up

needs_redis = pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")

COMPOSE = ROOT / "docker-compose.yml"
PROCESSES = ("web", "worker", "beat")
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
        assert declared["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in declared["DATABASE_URL"]
        assert declared["REDIS_URL"].startswith("redis://redis:6379/")
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
        return ["sh", "-c", shlex.join(self.argv(words)).replace("'celery@$HOSTNAME'", '"celery@$HOSTNAME"')]


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
    variables = {"SECRET_KEY": "compose-test-" + uuid.uuid4().hex, "SCRIPTHUT_ADMIN_PASSWORD": ADMIN_PASSWORD}
    create_database(deployment.database)
    flush_redis()
    # What the postgres and redis services' own checks say about this machine's servers.
    for name in ("postgres", "redis"):
        assert healthy(machine.healthcheck(services[name]), {**os.environ, "PGHOST": "127.0.0.1"}), name

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

    from playwright.sync_api import expect, sync_playwright

    pushed: list[str] = []
    with sync_playwright() as playwright:
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
