"""SSH transport for Slurm and PBS backends: one persistent paramiko connection per backend
(and per user identity on a ``per_user`` backend).

- Host keys are checked against ``known_hosts`` (the file from the config, else the
  user's); an unknown key is refused unless the backend opts out with
  ``ssh.allow_unknown_host_keys: true``. There is no silent AutoAddPolicy.
- The connection is kept alive and re-opened on demand; after a failure, new
  attempts wait with exponential backoff, and meanwhile every call fails at once
  with the same clear reason (DNS, refused, auth, host key, timeout).
- Commands run under ``bash`` whatever the login shell is; every command has a
  timeout; files are read over SFTP, the tail only.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from backends.base import BackendError, BackendUnavailable, CommandResult, FileRefused, refuse_special

log = logging.getLogger("backends.ssh")

MAX_BACKOFF = 60.0


class ConnectionLost(BackendUnavailable):  # noqa: N818
    """The connection dropped after a command was sent: its effect is unknown."""


class SshTransport:
    def __init__(
        self,
        *,
        host: str,
        port: int = 22,
        user: str | None = None,
        key_path: str | None = None,
        cert_path: str | None = None,
        pkey: paramiko.PKey | None = None,
        known_hosts: str | None = None,
        allow_unknown_host_keys: bool = False,
        connect_timeout: float = 10,
        keepalive: int = 30,
    ):
        self.host = host
        self.port = port
        self.user = user or os.environ.get("USER") or "root"
        self.key_path = key_path
        self.cert_path = cert_path
        self.pkey = pkey  # a key held in memory (a user's identity), instead of key_path
        self.known_hosts = known_hosts
        self.allow_unknown_host_keys = allow_unknown_host_keys
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.round_trips = 0  # commands and file reads sent, for benchmarks
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""

    @classmethod
    def from_settings(cls, ssh: dict[str, Any], login: tuple[str, paramiko.PKey] | None = None) -> SshTransport:
        """The ``ssh:`` block's connection; ``login``: a (username, key) to log in with
        instead of the block's account, as a user's cluster identity does."""
        user, pkey = login if login else (ssh.get("user"), None)
        return cls(
            host=ssh["host"],
            port=int(ssh.get("port") or 22),
            user=user,
            # A login brings its own key: never the block's, nor the agent's or default keys.
            key_path=None if login else ssh.get("key_path"),
            cert_path=None if login else ssh.get("cert_path"),
            pkey=pkey,
            known_hosts=ssh.get("known_hosts"),
            allow_unknown_host_keys=bool(ssh.get("allow_unknown_host_keys")),
        )

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    # -- connection --------------------------------------------------------------------

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client else None
            if client and transport and transport.is_active():
                return client
            self._drop()
            if time.monotonic() < self._retry_at:
                raise BackendUnavailable(self._last_error)
            try:
                client = self._open()
            except BackendUnavailable as exc:
                self._failures += 1
                self._retry_at = time.monotonic() + min(MAX_BACKOFF, 2 ** (self._failures - 1))
                self._last_error = str(exc)
                log.warning("ssh %s: %s", self.where, exc)
                raise
            if self._failures:
                log.info("ssh %s: connected again after %d failed attempts", self.where, self._failures)
            self._failures, self._retry_at, self._last_error = 0, 0.0, ""
            self._client = client
            return client

    def _open(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            if self.known_hosts:
                client.load_host_keys(os.path.expanduser(self.known_hosts))
            else:
                client.load_system_host_keys()
        except OSError as exc:
            raise BackendUnavailable(f"cannot read known_hosts {self.known_hosts}: {exc.strerror}") from exc
        policy = paramiko.WarningPolicy() if self.allow_unknown_host_keys else paramiko.RejectPolicy()
        client.set_missing_host_key_policy(policy)
        self._connect(client, self._load_key())
        transport = client.get_transport()
        if transport:
            transport.set_keepalive(self.keepalive)
        return client

    def _connect_options(self, pkey: paramiko.PKey | None) -> dict[str, Any]:
        """``client.connect``'s options: where, how long to wait, and how to authenticate
        (the configured key with its certificate, else the agent and the default keys)."""
        search = pkey is None and not self.key_path
        return {
            "port": self.port,
            "username": self.user,
            "pkey": pkey,
            "key_filename": None if pkey else self.key_path and os.path.expanduser(self.key_path),
            "timeout": self.connect_timeout,
            "banner_timeout": self.connect_timeout,
            "auth_timeout": self.connect_timeout,
            "allow_agent": search,
            "look_for_keys": search,
        }

    def _connect(self, client: paramiko.SSHClient, pkey: paramiko.PKey | None) -> None:
        """``client.connect``; every way it fails becomes BackendUnavailable with a clear reason."""
        try:
            client.connect(self.host, **self._connect_options(pkey))
        except socket.gaierror as exc:
            raise BackendUnavailable(f"DNS lookup of {self.host} failed: {exc.strerror or exc}") from exc
        except paramiko.BadHostKeyException as exc:
            raise BackendUnavailable(
                f"host key mismatch for {self.host}:{self.port}: got {exc.key.get_name()} "
                f"{exc.key.get_fingerprint().hex()}, known_hosts has a different key (possible attack)"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise BackendUnavailable(f"authentication failed for {self.where}: {exc}") from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            raise BackendUnavailable(f"connection refused by {self.host}:{self.port}") from exc
        except TimeoutError as exc:
            raise BackendUnavailable(f"timed out connecting to {self.host}:{self.port}") from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise BackendUnavailable(
                    f"unknown host key for {self.host}:{self.port}: add it to "
                    f"{self.known_hosts or '~/.ssh/known_hosts'} (or set ssh.allow_unknown_host_keys)"
                ) from exc
            raise BackendUnavailable(f"ssh to {self.where} failed: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from exc

    def _load_key(self) -> paramiko.PKey | None:
        if self.pkey is not None:
            return self.pkey
        if not self.key_path:
            return None
        path = Path(self.key_path).expanduser()
        try:
            pkey = paramiko.PKey.from_path(path)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"ssh key {path} not found") from exc
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot load ssh key {path}: {exc}") from exc
        if self.cert_path:
            try:
                pkey.load_certificate(str(Path(self.cert_path).expanduser()))
            except (OSError, ValueError, paramiko.SSHException) as exc:
                raise BackendUnavailable(f"cannot load ssh certificate {self.cert_path}: {exc}") from exc
            # paramiko also takes a plain public key here; the server would then refuse the login.
            key_type = pkey.public_blob.key_type if pkey.public_blob else ""
            if not key_type.endswith("-cert-v01@openssh.com"):
                raise BackendUnavailable(
                    f"cannot load ssh certificate {self.cert_path}: it is a {key_type or 'non-certificate'} key, "
                    "not an OpenSSH certificate (the -cert.pub file)"
                )
        return pkey

    def _drop(self) -> None:
        if self._sftp:
            try:
                self._sftp.close()
            except Exception:  # noqa: S110  (closing a dead channel)
                pass
        if self._client:
            self._client.close()
        self._client = None
        self._sftp = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- commands and files ----------------------------------------------------------

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = 120) -> CommandResult:
        """Run ``command`` under bash. Raises BackendUnavailable if it could not be sent,
        ConnectionLost if the connection dropped after it was sent."""
        return self._exec("bash -c " + shlex.quote(command), stdin, timeout)

    def run_script(self, script: str, *, timeout: float = 300) -> CommandResult:
        """Run a (possibly large) bash script fed on stdin: no argument-length limit."""
        return self._exec("bash -s", script.encode(), timeout)

    def _exec(self, command: str, stdin: bytes | None, timeout: float) -> CommandResult:
        client = self._connected()
        try:
            channel = client.get_transport().open_session(timeout=self.connect_timeout)  # type: ignore[union-attr]
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise BackendUnavailable(f"ssh {self.where}: cannot open a session: {exc}") from exc
        self.round_trips += 1
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            deadline = time.monotonic() + timeout
            stdout, stderr = bytearray(), bytearray()
            # Read both streams while the command runs: a full window would stall it.
            while not channel.exit_status_ready():  # (also true once the channel is closed)
                if channel.recv_ready():
                    stdout += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                elif time.monotonic() > deadline:
                    raise BackendError(f"ssh {self.where}: command timed out after {timeout:.0f}s")
                else:
                    channel.status_event.wait(0.01)
            # sshd sends the exit status as soon as the command exits, and what is still in
            # its pipes after it: read each stream to its end (EOF or close).
            stdout += _read_to_end(channel.recv)
            stderr += _read_to_end(channel.recv_stderr)
            code = channel.recv_exit_status()
        except TimeoutError as exc:
            raise BackendError(f"ssh {self.where}: command timed out after {timeout:.0f}s") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise ConnectionLost(f"ssh {self.where}: connection lost: {exc}") from exc
        finally:
            channel.close()
        if code == -1:
            self.close()
            raise ConnectionLost(f"ssh {self.where}: connection lost before the command finished")
        return CommandResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def open_stream(self, command: str) -> paramiko.Channel:
        """Start a long-running ``command`` on the connection and hand back its channel, to
        read its output as it comes (its stdin stays open: closing the channel ends it)."""
        client = self._connected()
        try:
            # Not counted in round_trips: one session that stays open for minutes.
            channel = client.get_transport().open_session(timeout=self.connect_timeout)  # type: ignore[union-attr]
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise BackendUnavailable(f"ssh {self.where}: cannot open a session: {exc}") from exc
        return channel

    def _sftp_session(self) -> paramiko.SFTPClient:
        """The connection's SFTP session, opened once. A server without the subsystem
        refuses the channel: said so, and the connection is kept (commands still work)."""
        client = self._connected()
        with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = client.open_sftp()
                except (paramiko.SSHException, EOFError) as exc:
                    if not self._transport_alive(client):
                        self.close()
                        raise BackendUnavailable(f"ssh {self.where}: connection lost: {exc}") from exc
                    raise BackendError(
                        f"ssh {self.where}: the SSH server offers no SFTP subsystem "
                        "(needed to read files: logs, scripts, generated workflows)"
                    ) from exc
            return self._sftp

    @staticmethod
    def _transport_alive(client: paramiko.SSHClient) -> bool:
        transport = client.get_transport()
        return transport is not None and transport.is_active()

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        """The last ``max_bytes`` of a remote file (``~/`` is the login's home)."""
        sftp = self._sftp_session()
        self.round_trips += 1
        try:
            remote = path[2:] if path.startswith("~/") else path  # SFTP paths are relative to home
            # Before opening: a FIFO would hang the SFTP session, /proc shows the server's secrets.
            refuse_special(sftp.normalize(remote), sftp.stat(remote).st_mode or 0)
            with sftp.open(remote, "rb") as handle:
                size = handle.stat().st_size or 0
                handle.seek(max(0, size - max_bytes))
                return handle.read(max_bytes).decode("utf-8", "replace")
        except (FileNotFoundError, FileRefused):
            raise
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                raise FileNotFoundError(path) from exc
            raise BackendError(f"cannot read {path} on {self.host}: {exc}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            self.close()
            raise BackendUnavailable(f"ssh {self.where}: connection lost: {exc}") from exc


def _read_to_end(recv: Callable[[int], bytes]) -> bytes:
    """What a channel's stream still holds, up to its end (the channel's timeout applies)."""
    rest = bytearray()
    while chunk := recv(65536):
        rest += chunk
    return bytes(rest)
