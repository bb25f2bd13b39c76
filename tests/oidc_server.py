"""A real OpenID Connect provider on 127.0.0.1, for the OpenID Connect sign-in tests.

tests/setup/oidc/provider.mjs runs the certified ``oidc-provider`` npm package under Node
(tests/setup/services.sh installs it with ``npm ci``). The session fixture ``oidc_provider``
starts it on a free loopback port with one confidential client whose redirect URI is the
callback of pytest-django's ``live_server``, and stops it when the session ends. Load it as a
plugin (see tests/cluster.py for why)::

    pytest_plugins = ["tests.oidc_server"]

The provider has one user, ``carol``, whose ``groups`` claim starts as physics + hut-admins;
``set_groups`` changes it for her next sign-in (the provider reads its users file each time).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.services import ChildProcess, ServiceError, serve

SETUP_DIR = Path(__file__).resolve().parent / "setup" / "oidc"
CLIENT_ID = "scripthut-portal"
CALLBACK_PATH = "/accounts/oidc/callback/"
USERS: dict[str, dict[str, Any]] = {
    "carol": {
        "password": "pw-carol-idp",
        "claims": {
            "name": "Carol Chen",
            "given_name": "Carol",
            "family_name": "Chen",
            "email": "carol@scripthut.test",
            "email_verified": True,
            "groups": ["physics", "hut-admins"],
        },
    }
}


@dataclass
class OIDCProvider:
    """How to reach the test provider, and how to change its user's groups."""

    issuer: str
    client_secret: str = field(repr=False)
    users_file: Path

    def env(self) -> dict[str, str]:
        """The SCRIPTHUT_OIDC_* variables that point the portal at this provider."""
        return {
            "SCRIPTHUT_OIDC_ISSUER": self.issuer,
            "SCRIPTHUT_OIDC_CLIENT_ID": CLIENT_ID,
            "SCRIPTHUT_OIDC_CLIENT_SECRET": self.client_secret,
            "SCRIPTHUT_OIDC_NAME": "Test IdP",
            "SCRIPTHUT_OIDC_SCOPES": "openid email profile groups",
            "SCRIPTHUT_OIDC_STAFF_GROUP": "hut-admins",
        }

    def password(self, username: str) -> str:
        return str(self._users()[username]["password"])

    def set_groups(self, username: str, groups: list[str]) -> None:
        users = self._users()
        users[username]["claims"]["groups"] = groups
        self.users_file.write_text(json.dumps(users))

    def _users(self) -> dict[str, dict[str, Any]]:
        users: dict[str, dict[str, Any]] = json.loads(self.users_file.read_text())
        return users


def _issuer(log: Path) -> str:
    """The issuer the provider printed once it listens ("" before that)."""
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith('{"issuer"'):
            return str(json.loads(line)["issuer"])
    return ""


def start_provider(directory: Path, redirect_uri: str) -> tuple[ChildProcess, OIDCProvider]:
    node = shutil.which("node")
    if node is None or not (SETUP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise ServiceError("node or tests/setup/oidc/node_modules is missing (bash tests/setup/services.sh)")
    users_file = directory / "users.json"
    users_file.write_text(json.dumps(USERS))
    secret = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": secret,
        "REDIRECT_URIS": redirect_uri,
        "USERS_FILE": str(users_file),
    }
    log = directory / "provider.log"
    child = ChildProcess.start("oidc-provider", [node, "provider.mjs"], log, env=env, cwd=SETUP_DIR)
    child.wait_until(lambda: bool(_issuer(log)), timeout=30)
    return child, OIDCProvider(issuer=_issuer(log), client_secret=secret, users_file=users_file)


@pytest.fixture(scope="session")
def oidc_provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The running test provider (module docstring); skips, or fails under CI, if it cannot start."""
    callback = f"{live_server.url}{CALLBACK_PATH}"
    yield from serve("test OpenID Connect provider", lambda: start_provider(tmp_path_factory.mktemp("oidc"), callback))
