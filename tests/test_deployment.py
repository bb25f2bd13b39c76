"""Deployment hardening (scripthut_site.deployment): the host names the portal answers to, and
the one variable that says it is behind a TLS proxy. Settings are read in a fresh process,
as a deployment starts them."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPTHUT = str(Path(sys.executable).with_name("scripthut"))
PUBLIC = "https://portal.example.org"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh portal's environment: its own data dir, no config file, nothing about hosts or TLS,
    and this tree's code (not whichever copy is installed)."""
    skip = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")
    clean = {k: v for k, v in os.environ.items() if k not in skip and not k.startswith("SCRIPTHUT_")}
    return clean | {
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "none.yaml"),
        "PYTHONPATH": str(ROOT),
    }


def settings_of(env: dict[str, str], *names: str) -> dict[str, Any]:
    """The named Django settings of a process started with ``env``."""
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    env = env | {"DJANGO_SETTINGS_MODULE": "scripthut_site.settings"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


TLS = ("SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS")


def test_hosts_default_to_the_local_names_never_any(env: dict[str, str]) -> None:
    values = settings_of(env, "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", *TLS)
    assert values["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]
    assert values["CSRF_TRUSTED_ORIGINS"] == []
    assert values["SECURE_PROXY_SSL_HEADER"] is None and values["SECURE_HSTS_SECONDS"] == 0
    assert not values["SESSION_COOKIE_SECURE"] and not values["CSRF_COOKIE_SECURE"]


def test_the_configured_server_host_and_allowed_hosts_variable(env: dict[str, str], tmp_path: Path) -> None:
    Path(env["SCRIPTHUT_CONFIG"]).write_text("settings:\n  server_host: hub.lab.example.org\n")
    assert settings_of(env, "ALLOWED_HOSTS")["ALLOWED_HOSTS"] == [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "hub.lab.example.org",
    ]
    overridden = settings_of(env | {"ALLOWED_HOSTS": "a.example.org, b.example.org"}, "ALLOWED_HOSTS")
    assert overridden["ALLOWED_HOSTS"] == ["a.example.org", "b.example.org"]


def test_an_https_public_url_turns_on_the_tls_settings(env: dict[str, str]) -> None:
    values = settings_of(env | {"SCRIPTHUT_PUBLIC_URL": PUBLIC + "/"}, "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", *TLS)
    assert values["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]", "portal.example.org"]
    assert values["CSRF_TRUSTED_ORIGINS"] == [PUBLIC]
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SESSION_COOKIE_SECURE"] is True and values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 180 * 24 * 3600


def test_a_plain_http_public_url_only_adds_the_host(env: dict[str, str]) -> None:
    values = settings_of(env | {"SCRIPTHUT_PUBLIC_URL": "http://hub:8000"}, "ALLOWED_HOSTS", *TLS)
    assert values["ALLOWED_HOSTS"][-1] == "hub"
    assert values["SECURE_PROXY_SSL_HEADER"] is None and not values["SESSION_COOKIE_SECURE"]


def test_a_request_for_another_host_is_refused(db: None) -> None:
    assert Client(HTTP_HOST="evil.example.org").get("/health").status_code == 400
    assert Client(HTTP_HOST="localhost:8000").get("/health").status_code == 200


def get(port: int, path: str, host: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.2", port, timeout=10)
    connection.request("GET", path, headers={"Host": host, **headers})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_serve_answers_its_host_and_the_public_url_and_nothing_else(env: dict[str, str]) -> None:
    port = free_port()
    env |= {"SCRIPTHUT_PUBLIC_URL": PUBLIC, "SCRIPTHUT_ADMIN_PASSWORD": "admin-pw-123"}
    env.pop("SCRIPTHUT_CONFIG")  # the demo: no config named, none in the working directory
    server = subprocess.Popen(
        [SCRIPTHUT, "serve", "--host", "127.0.0.2", "--port", str(port)],
        env=env,
        cwd=Path(env["SCRIPTHUT_DATA_DIR"]).parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ours = get(port, "/health", f"127.0.0.2:{port}")  # the --host of serve
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "portal did not start"
                time.sleep(0.3)
        assert ours.status == 200
        assert get(port, "/health", "evil.example.org").status == 400
        # Through the TLS proxy: the public host, HTTPS as the proxy says, secure cookies and HSTS.
        page = get(port, "/accounts/login/", "portal.example.org", **{"X-Forwarded-Proto": "https"})
        assert page.status == 200
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "Secure" in page.headers["Set-Cookie"]
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "answering requests for localhost, 127.0.0.1, [::1], portal.example.org, 127.0.0.2" in output


FILE_MODES = """
import json, os, stat, django
from pathlib import Path
from django.conf import settings
django.setup()
from django.core.management import call_command
from django.db import connection
from scripthut_site import crypto
call_command("migrate", verbosity=0)
crypto.encrypt("a secret")  # makes the key file
with connection.cursor() as cursor:  # the connection stays open: -wal and -shm exist now
    cursor.execute("INSERT INTO django_session VALUES ('k', 'v', '2100-01-01')")
    data = Path(settings.DATA_DIR)
    print(json.dumps({p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in [data, *data.iterdir()]}))
"""


def test_the_data_dir_database_and_keys_are_the_portal_users_alone(env: dict[str, str]) -> None:
    env |= {"DJANGO_SETTINGS_MODULE": "scripthut_site.settings"}
    # A common umask, which alone would leave everything readable by all.
    command = ["bash", "-c", 'umask 022 && exec "$0" -c "$1"', sys.executable, FILE_MODES]
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modes = json.loads(proc.stdout.splitlines()[-1])
    assert modes.pop("data") == "0o700" and modes.pop("static") == "0o700"
    assert modes == {
        name: "0o600"
        for name in ("secret_key", "fernet.keys", "scripthut.sqlite3", "scripthut.sqlite3-wal", "scripthut.sqlite3-shm")
    }
