"""SSH to a task instance: the spec's path, used only once a task has finished (to read
its exit code and copy its log) or when someone opens a running task's log.

:class:`InstanceConnector` is the small interface the adapter needs. The real one,
:class:`SsmConnector`, has no inbound port 22 and no key pair: it pushes a one-minute
key with EC2 Instance Connect and tunnels SSH through SSM Session Manager
(``AWS-StartSSHSession``, the session-manager-plugin as ProxyCommand). Tests swap in a
connector that reaches a loopback sshd instead (setting ``SCRIPTHUT_EC2_CONNECTOR``).
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backends.aws.clients import aws_errors, client, endpoint_url
from backends.base import BackendUnavailable, safe_filename
from backends.ec2.instances import count_calls
from backends.ec2.settings import Ec2Settings

CONNECT_TIMEOUT = 20.0


class InstanceConnector(ABC):
    """Opens SSH to one task instance (as the backend's ``ssh_user``)."""

    def __init__(self, settings: Ec2Settings, boto_session: boto3.Session, calls: Counter[str] | None = None):
        self.settings = settings
        self.session = boto_session
        self.calls: Counter[str] = Counter() if calls is None else calls  # AWS API calls, by operation
        self.sessions_opened = 0  # for the benchmark: SSH sessions per poll cycle
        self._count_lock = threading.Lock()  # finishing runs several sessions at once

    @abstractmethod
    def open(self, instance_id: str) -> paramiko.SSHClient:
        """A connected client; BackendUnavailable if the instance cannot be reached."""

    def instance_path(self, instance_id: str, path: str) -> str:
        """Where the instance's ``path`` is as seen through this connector (the same on an instance)."""
        return path

    @contextmanager
    def sftp(self, instance_id: str) -> Iterator[paramiko.SFTPClient]:
        ssh = self.open(instance_id)
        with self._count_lock:
            self.sessions_opened += 1
        try:
            yield ssh.open_sftp()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise BackendUnavailable(f"ssh to {instance_id} failed: {exc}") from exc
        finally:
            ssh.close()


def ephemeral_key() -> tuple[paramiko.Ed25519Key, str]:
    """A fresh Ed25519 key and its OpenSSH public line (EC2 Instance Connect keeps it 60 s)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))
    return key, f"{key.get_name()} {key.get_base64()}"


def push_key(connector: InstanceConnector, instance_id: str, public_key: str) -> None:
    """EC2 Instance Connect: the instance accepts ``public_key`` for ``ssh_user`` for 60 seconds."""
    settings = connector.settings
    eic = count_calls(client(settings.aws, "ec2-instance-connect", connector.session), connector.calls)
    with aws_errors(f"ec2-instance-connect for {instance_id}"):
        eic.send_ssh_public_key(InstanceId=instance_id, InstanceOSUser=settings.ssh_user, SSHPublicKey=public_key)


class TunnelHostKeys(paramiko.MissingHostKeyPolicy):
    """Accept the instance's host key without saving it: the SSM session is already
    authenticated end to end by AWS (TLS to SSM, bound to this instance id), and every
    instance is new, so there is no key to have known beforehand."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        return None


class SsmConnector(InstanceConnector):
    """SSH over an SSM Session Manager tunnel, logging in with an EC2 Instance Connect key."""

    def open(self, instance_id: str) -> paramiko.SSHClient:
        plugin = shutil.which("session-manager-plugin")
        if plugin is None:
            raise BackendUnavailable("session-manager-plugin is not installed on the ScriptHut host")
        key, public = ephemeral_key()
        push_key(self, instance_id, public)
        ssm = count_calls(client(self.settings.aws, "ssm", self.session), self.calls)
        parameters = {
            "Target": instance_id,
            "DocumentName": "AWS-StartSSHSession",
            "Parameters": {"portNumber": ["22"]},
        }
        with aws_errors(f"ssm start_session to {instance_id}"):
            started = ssm.start_session(**parameters)
        proxy = paramiko.ProxyCommand(shlex.join(self.plugin_command(plugin, started, parameters)))
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(TunnelHostKeys())
        try:
            ssh.connect(instance_id, username=self.settings.ssh_user, pkey=key, sock=proxy, timeout=CONNECT_TIMEOUT,
                        banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT, allow_agent=False,
                        look_for_keys=False)  # fmt: skip
        except (paramiko.SSHException, OSError) as exc:
            ssh.close()
            raise BackendUnavailable(f"ssh over SSM to {instance_id} failed: {exc}") from exc
        return ssh

    def plugin_command(self, plugin: str, started: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
        """What the AWS CLI runs for ``aws ssm start-session``: the plugin with the session
        it just opened (paramiko runs it without a shell)."""
        session = {k: started[k] for k in ("SessionId", "StreamUrl", "TokenValue")}
        region = self.session.region_name or self.settings.aws.region
        return [
            plugin,
            json.dumps(session),
            region,
            "StartSession",
            self.settings.aws.profile or "",
            json.dumps(parameters),
            endpoint_url(self.settings.aws) or f"https://ssm.{region}.amazonaws.com",
        ]


def local_copy(data_dir: Path, run_id: str, task_id: str) -> Path:
    """``<data_dir>/ec2-logs/<run_id>/<task_id>.log``: where a finished task's log is kept."""
    return data_dir / "ec2-logs" / safe_filename(run_id) / f"{safe_filename(task_id)}.log"
