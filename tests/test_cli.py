"""The `scripthut` command end to end, as a newcomer uses it: embedded SQLite, no broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SCRIPTHUT = str(Path(sys.executable).with_name("scripthut"))


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """Environment of a fresh embedded portal in its own data dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
    }
    return env


def scripthut(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SCRIPTHUT, *args], env=env, capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"scripthut {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_run_wait_on_the_local_backend(home, tmp_path):
    Path(home["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n    max_concurrent: 2\n")
    scripthut(home, "import-config", home["SCRIPTHUT_CONFIG"])
    scripthut(home, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")

    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "tasks": [
                    {"id": "prep", "name": "Prep", "command": "sleep 0.5"},
                    {"id": "sim.1", "name": "S1", "command": "echo 1", "deps": ["prep"]},
                    {"id": "sim.2", "name": "S2", "command": "echo 2", "deps": ["prep"]},
                    {"id": "end", "name": "End", "command": "true", "deps": ["sim.*"]},
                ]
            }
        )
    )
    done = scripthut(home, "run", str(good), "--backend", "local", "--wait")
    assert "completed" in done.stdout

    bad = tmp_path / "fails.json"
    bad.write_text(json.dumps([{"id": "x", "name": "X", "command": "exit 5"}]))
    failed = scripthut(home, "run", str(bad), "--backend", "local", "--wait", check=False)
    assert failed.returncode == 1
    assert "x: failed exit code 5" in failed.stdout

    cyclic = tmp_path / "cycle.json"
    cyclic.write_text(json.dumps([{"id": "a", "name": "A", "command": "true", "deps": ["a"]}]))
    refused = scripthut(home, "run", str(cyclic), "--backend", "local", check=False)
    assert refused.returncode == 2
    assert "dependency cycle: a -> a" in refused.stderr and "nothing was submitted" in refused.stderr

    unknown = scripthut(home, "run", str(good), "--backend", "nope", check=False)
    assert unknown.returncode == 2 and "unknown backend 'nope' (known: local)" in unknown.stderr


def test_import_config_error_names_the_key_path(home):
    Path(home["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: hpc\n    type: slurm\n    ssh:\n      port: 22\n")
    proc = scripthut(home, "import-config", home["SCRIPTHUT_CONFIG"], check=False)
    assert proc.returncode == 1
    assert "backends[0].ssh.host: field required" in proc.stderr


def test_config_typos_are_warned_first_with_the_closest_key_and_strict_refuses_them(home):
    """Typos used to be warnings printed after the summary, with exit 0 and no hint; a
    top-level `workflow:` (for `workflows:`) imported 0 workflows without a word."""
    config = Path(home["SCRIPTHUT_CONFIG"])
    config.write_text(
        "backends:\n  - name: local\n    type: local\n    max_concurent: 2\n"
        "workflow:\n  - name: w\n    backend: local\n    command: echo []\n"
    )
    strict = scripthut(home, "import-config", "--strict", str(config), check=False)
    assert strict.returncode == 1 and "nothing was changed" in strict.stderr
    assert "workflow: unknown key, ignored (did you mean 'workflows'?) (an error with --strict)" in strict.stderr
    assert "Imported" not in strict.stdout
    listed = "from backends.models import Backend; print(Backend.objects.count())"
    assert scripthut(home, "shell", "-c", listed).stdout.split()[-1] == "0"  # nothing imported

    loose = scripthut(home, "import-config", str(config))
    assert loose.stderr.splitlines() == [
        "warning: workflow: unknown key, ignored (did you mean 'workflows'?)",
        "warning: backends[0].max_concurent: unknown key, ignored (did you mean 'max_concurrent'?)",
    ]
    assert loose.stdout.startswith(f"Imported {config}: backends: 1 created")
    assert "warning" not in loose.stdout  # the summary is the last thing printed, warnings before it


def test_make_serve_takes_a_port_and_the_readme_says_where_scripthut_lives():
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`

    def serve_line(*args: str) -> str:
        dry = subprocess.run(["make", "-n", "serve", *args], cwd=root, env=env, capture_output=True, text=True)
        (line,) = [line for line in dry.stdout.splitlines() if "scripthut serve" in line]
        return line.strip()

    assert serve_line("PORT=8811", "HOST=0.0.0.0").endswith("scripthut serve --host 0.0.0.0 --port 8811")
    assert serve_line().endswith("scripthut serve")
    readme = (root / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("## Settings")]
    assert ".venv/bin/scripthut" in quick_start and "apt-get" in quick_start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, data: dict | None = None, token: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback only)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_serve_with_no_config_runs_the_demo(home):
    """`scripthut serve` on a fresh machine: admin created, demo set up, ticker running."""
    home.pop("DJANGO_SUPERUSER_PASSWORD")
    home.pop("SCRIPTHUT_CONFIG")  # no config anywhere: none named, none in the working directory
    port = free_port()
    server = subprocess.Popen(
        [SCRIPTHUT, "serve", "--port", str(port)],
        env=home,
        cwd=Path(home["SCRIPTHUT_DATA_DIR"]).parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = http(f"{base}/health")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "portal did not start"
                time.sleep(0.3)
        assert status == 200 and body["status"] == "ok"
        token = scripthut(home, "createtoken", "admin").stdout.strip()
        workflow = json.loads((Path(__file__).parent.parent / "runs/demo/demo-workflow.json").read_text())
        status, created = http(f"{base}/api/runs", {"backend": "local", "workflow": workflow}, token)
        assert status == 201, created
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status, run = http(f"{base}/api/runs/{created['id']}", token=token)
            if run["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert run["status"] == "completed", run
        assert [t["state"] for t in run["tasks"]] == ["completed"] * 6
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "No config file at" in output
    assert "Created user 'admin' with password: " in output
    assert f"http://127.0.0.1:{port}/" in output


def test_a_token_that_begins_with_a_dash_is_a_token() -> None:
    """One token in 64 begins with "-" (token_urlsafe): `--token -Ytn...` was taken for an
    option and refused (CI's remote-command test drew one)."""
    from scripthut_site import remote

    args = remote.parser().parse_args(remote._token_joined(["login", "http://127.0.0.1:9", "--token", "-Ytn-rfr4"]))
    assert (args.command, args.url, args.token) == ("login", "http://127.0.0.1:9", "-Ytn-rfr4")
