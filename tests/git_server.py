"""A real git server over HTTP with Basic authentication, on a loopback port of its own.

``git http-backend`` (the CGI program git ships) serves the bare repositories under a
directory; a small threading HTTP server in front of it refuses every request without
the one user name and password it was given (401, as GitHub or GitLab would), and
records, for every request it let in, whether the password could be read on the command
line of any process then running (``/proc/*/cmdline``: what ``ps`` shows to anyone).
"""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


def git(*args: str, cwd: Path | None = None) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def on_any_command_line(secret: str) -> list[str]:
    """The command lines of running processes that show ``secret``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if secret in argv:
                found.append(argv)
    return found


@dataclass
class GitServer:
    root: Path
    user: str
    password: str
    port: int = 0
    authorized: int = 0  # requests let in
    refused: int = 0  # requests without the right credentials
    exposed: list[str] = field(default_factory=list)  # command lines that showed the password

    def url(self, repo: str, *, password: str | None = None) -> str:
        return f"http://{self.user}:{self.password if password is None else password}@127.0.0.1:{self.port}/{repo}"

    def bare_repo(self, name: str, files: dict[str, str]) -> str:
        """A bare repository ``name`` with one commit of ``files`` on main; its commit."""
        work = self.root.parent / f"{name}.work"
        work.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=work)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "init", cwd=work)
        git("clone", "-q", "--bare", str(work), str(self.root / name))
        return git("rev-parse", "HEAD", cwd=work)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the http.server API)
        pass

    def do_GET(self) -> None:  # noqa: N802  (the http.server API)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        state = self.server.state
        expected = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            state.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        state.authorized += 1
        state.exposed += on_any_command_line(state.password)
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(state.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": state.user,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, timeout=60)
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(separator)
        headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
        status = next((value.strip() for name, value in headers if name.lower() == "status"), "200 OK")
        self.send_response(int(status.split()[0]))
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    state: GitServer


@contextmanager
def git_server(root: Path, user: str, password: str) -> Iterator[GitServer]:
    """Serve the bare repositories in ``root`` on 127.0.0.1 until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = GitServer(root=root, user=user, password=password, port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
