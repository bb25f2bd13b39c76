"""Forwarded headers are believed only from SCRIPTHUT_TRUSTED_PROXIES (issue 18, finding 5).

`scripthut serve` runs uvicorn, which by default believed ``X-Forwarded-For`` from 127.0.0.1:
any process on the portal's machine (a task of a `local` backend) could then pose as a new
address for every guess of an API token (never locked out), or lock out any address it
named. Here real `scripthut serve` processes are sent forged headers from 127.0.0.1, without
and with 127.0.0.1 as a trusted proxy, and the lockout and the audit trail are read from
the portal's own database.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from scripthut_site import deployment
from tests.services import ChildProcess, accepts_connections, free_port
from tests.test_cli import SCRIPTHUT

LIMIT = 5  # SCRIPTHUT_LOGIN_FAILURE_LIMIT's default


class Portal:
    """A `scripthut serve` of its own (embedded, SQLite in its data dir) on a free loopback port."""

    def __init__(self, base: Path, trusted: str | None):
        self.data = base / "data"
        self.port = free_port()
        skip = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SCRIPTHUT_CONFIG")  # no config: the demo
        env = {k: v for k, v in os.environ.items() if k not in skip}
        env |= {"SCRIPTHUT_DATA_DIR": str(self.data), "SCRIPTHUT_ADMIN_PASSWORD": "admin-pw-123"}
        env.pop("SCRIPTHUT_TRUSTED_PROXIES", None)
        if trusted is not None:
            env["SCRIPTHUT_TRUSTED_PROXIES"] = trusted
        command = [SCRIPTHUT, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.child = ChildProcess.start("scripthut serve", command, base / "serve.log", env=env, cwd=base)
        self.child.wait_until(lambda: accepts_connections(self.port), timeout=120)

    def bad_token(self, forged_for: str) -> int:
        """An API call with a wrong token, from 127.0.0.1, claiming to come from ``forged_for``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/runs")
        request.add_header("Authorization", "Token not-a-real-token")
        request.add_header("X-Forwarded-For", forged_for)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback only)
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(f"file:{self.data / 'scripthut.sqlite3'}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()


@pytest.fixture
def portal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Portal]:
    started = Portal(tmp_path, request.param)
    try:
        yield started
    finally:
        started.child.stop()


@pytest.mark.parametrize("portal", [None], indirect=True)
def test_without_trusted_proxies_a_forged_address_is_ignored(portal: Portal) -> None:
    # Each guess claims another address: the lockout counts the real peer's all the same.
    statuses = [portal.bad_token(f"10.66.0.{i}") for i in range(LIMIT + 1)]
    assert statuses == [401] * (LIMIT - 1) + [429, 429]
    assert portal.query("SELECT DISTINCT ip_address FROM axes_accessattempt") == [("127.0.0.1",)]
    addresses = portal.query("SELECT DISTINCT address FROM runs_auditevent WHERE action LIKE 'login%'")
    assert addresses == [("127.0.0.1",)]


@pytest.mark.parametrize("portal", ["127.0.0.1"], indirect=True)
def test_a_trusted_proxy_forwards_the_clients_address(portal: Portal) -> None:
    statuses = [portal.bad_token("10.66.0.1") for _ in range(LIMIT)]
    assert statuses == [401] * (LIMIT - 1) + [429]
    assert portal.bad_token("10.66.0.2") == 401  # another client behind the proxy is not locked out
    attempts = portal.query("SELECT ip_address FROM axes_accessattempt ORDER BY ip_address")
    assert attempts == [("10.66.0.1",), ("10.66.0.2",)]
    locked = portal.query("SELECT target, address FROM runs_auditevent WHERE action = 'login_locked_out'")
    assert locked and set(locked) == {("address 10.66.0.1", "10.66.0.1")}


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert deployment.trusted_proxies({}) == []
    assert deployment.trusted_proxies({"SCRIPTHUT_TRUSTED_PROXIES": " 10.0.0.5, 10.1.0.0/16,::1 "}) == [
        "10.0.0.5",
        "10.1.0.0/16",
        "::1",
    ]
    for bad in ("*", "proxy.example.org", "10.0.0.300"):
        with pytest.raises(ImproperlyConfigured, match="SCRIPTHUT_TRUSTED_PROXIES: .* is not an IP address"):
            deployment.trusted_proxies({"SCRIPTHUT_TRUSTED_PROXIES": bad})
