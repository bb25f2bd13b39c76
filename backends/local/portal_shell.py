"""The local backend's shell as the portal's own account, for git checkouts.

A local backend's tasks and workflow commands run as its ``run_as`` user; its git
checkouts are made by the portal's own account instead (``LocalAdapter.checkout_shell``),
so that tasks may read them but never change them (``sources.git``). The commands get a
clean environment: the portal's may hold its secret key or database URL.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess

from backends.base import CommandResult

# Passed on from the portal's environment: how to reach a repository (proxies, CA files,
# the portal account's SSH agent), nothing of the portal's own secrets.
PASSED_ON = (
    "PATH",
    "LANG",
    *("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH"),
    "SSH_AUTH_SOCK",
)


class PortalShell:
    """A :class:`~backends.base.ShellAccess` running ``bash -c`` as the portal itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        if cwd:
            command = f"cd {shlex.quote(os.path.expanduser(cwd))} && {command}"
        home = os.path.expanduser("~")
        env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
        env.update(HOME=home, USER=getpass.getuser(), SHELL="/bin/bash")
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        proc = subprocess.run(
            ["bash", "-c", command], input=stdin, capture_output=True, timeout=timeout, cwd="/", env=env
        )
        return CommandResult(
            proc.returncode,
            proc.stdout.decode("utf-8", errors="replace"),
            proc.stderr.decode("utf-8", errors="replace"),
        )

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        with open(os.path.expanduser(path), "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - max_bytes))
            return handle.read(max_bytes).decode("utf-8", errors="replace")
