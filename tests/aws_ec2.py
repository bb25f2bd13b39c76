"""The AWS emulator for the EC2 backend's tests, and what plays the instances.

- :func:`moto_ec2` (fixture): moto's server on a free loopback port (real HTTP), test
  credentials in the environment, the default VPC's subnet and the public Amazon Linux
  AMI looked up. The server is stopped after the test.
- What moto cannot do, played here, and nothing else:
  * it runs no SSM command and has no ``list_command_invocations``: :class:`FakeSsmAgent`
    runs the sentinel command on the instance's directory and answers the listing;
  * it boots nothing: :class:`InstanceHost` runs each running instance's real user data
    on this machine, in a directory of its own (``SCRIPTHUT_ROOT``), with ``docker`` and
    ``shutdown`` replaced by the stubs in ``tests/ec2stubs``;
  * it has no SSM ``start_session``: :class:`LoopbackConnector` pushes the one-minute key
    with EC2 Instance Connect (to the emulator, for real), signs it with the test
    cluster's user CA for 60 s (what the instance's EIC agent does with a pushed key) and
    connects straight to the loopback sshd of tests/setup/cluster.sh (the tunnel part is
    not covered).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.ssm import models as ssm_models
from moto.ssm.responses import SimpleSystemManagerResponse

from backends.ec2.connector import InstanceConnector, ephemeral_key, push_key
from tests.cluster import Cluster

REGION = "us-east-2"
ACCOUNT = "123456789012"
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
STUBS = Path(__file__).with_name("ec2stubs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InstanceHost:
    """Plays the task instances: each running instance's user data runs here, in its own
    directory under ``root`` (readable by the sshd's test user)."""

    def __init__(self, url: str):
        self.root = Path(tempfile.mkdtemp(prefix="scripthut-ec2-", dir="/var/tmp"))
        self.root.chmod(0o755)
        self.ec2 = boto3.client("ec2", endpoint_url=url, region_name=REGION)
        self.booted: dict[str, subprocess.Popen[bytes] | None] = {}
        self.lock = threading.Lock()

    def directory(self, instance_id: str) -> Path:
        return self.root / instance_id

    def boot(self) -> list[str]:
        """Start the user data of every running instance not started yet; their ids."""
        started = []
        pages = self.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
        for reservation in pages["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] not in self.booted:
                    self._run_user_data(instance["InstanceId"])
                    started.append(instance["InstanceId"])
        return started

    def _run_user_data(self, instance_id: str) -> None:
        value = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        if "Value" not in value["UserData"]:
            self.booted[instance_id] = None  # not a task instance: nothing to run
            return
        user_data = base64.b64decode(value["UserData"]["Value"]).decode()
        directory = self.directory(instance_id)
        directory.mkdir(mode=0o755)
        (directory / "user-data.sh").write_text(user_data)
        env = {"PATH": f"{STUBS}:/usr/bin:/bin", "SCRIPTHUT_ROOT": str(directory), "HOME": str(directory)}
        with self.lock:
            self.booted[instance_id] = subprocess.Popen(
                ["bash", str(directory / "user-data.sh")], env=env, cwd=directory, stdin=subprocess.DEVNULL
            )

    def wait(self, timeout: float = 30) -> None:
        for process in list(self.booted.values()):
            if process is not None:
                process.wait(timeout)

    def stop(self) -> None:
        for process in self.booted.values():
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class FakeSsmAgent:
    """moto records a sent command but runs nothing: run it on each targeted instance's
    directory (the sentinel's absolute path moved there) as its SSM agent would."""

    host: InstanceHost | None = None

    @staticmethod
    def invocation_response(command: Any, instance_id: str, plugin_name: str) -> dict[str, Any]:
        response: dict[str, Any] = ORIGINAL_INVOCATION(command, instance_id, plugin_name)
        host = FakeSsmAgent.host
        if host is None or instance_id not in host.booted:
            return response
        root = str(host.directory(instance_id))
        script = "\n".join(command.parameters.get("commands", [])).replace("/var/run/", f"{root}/var/run/")
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20)
        response["StandardOutputContent"] = done.stdout
        return response

    @staticmethod
    def list_command_invocations(responder: SimpleSystemManagerResponse) -> ActionResult:
        command = responder.ssm_backend.get_command_by_id(responder._get_param("CommandId"))
        invocations = [
            {
                "CommandId": command.command_id,
                "InstanceId": invocation["InstanceId"],
                "Status": invocation["Status"],
                "CommandPlugins": [
                    {
                        "Name": invocation["PluginName"],
                        "Status": invocation["Status"],
                        "ResponseCode": 0,
                        "Output": invocation["StandardOutputContent"],
                    }  # fmt: skip
                ],
            }
            for invocation in command.invocations
        ]
        return ActionResult({"CommandInvocations": invocations})


ORIGINAL_INVOCATION = ssm_models.Command.invocation_response


@dataclass
class LoopbackEnd:
    """Where LoopbackConnector connects: the test cluster's sshd, and the instance host."""

    cluster: Cluster
    host: InstanceHost


class LoopbackConnector(InstanceConnector):
    """The tests' :class:`InstanceConnector` (see the module docstring)."""

    end: LoopbackEnd | None = None

    def open(self, instance_id: str) -> paramiko.SSHClient:
        end = self.end
        assert end is not None, "the moto_ec2 fixture with a cluster sets LoopbackConnector.end"
        key, public = ephemeral_key()
        push_key(self, instance_id, public)
        key.load_certificate(sign(end.cluster, public, self.settings.ssh_user))
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(end.cluster.known_hosts)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.connect(end.cluster.host, port=end.cluster.port, username=self.settings.ssh_user, pkey=key,
                    allow_agent=False, look_for_keys=False, timeout=10)  # fmt: skip
        return ssh

    def instance_path(self, instance_id: str, path: str) -> str:
        assert self.end is not None
        return f"{self.end.host.directory(instance_id)}{path}"


def sign(cluster: Cluster, public: str, user: str) -> str:
    """An OpenSSH certificate for ``public``, valid one minute, for ``user``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "key.pub"
        path.write_text(public + "\n")
        ca = str(Path(cluster.dir) / "user_ca")
        subprocess.run(
            ["ssh-keygen", "-q", "-s", ca, "-I", "scripthut-ec2-test", "-n", user, "-V", "-1m:+1m", str(path)],
            check=True,
            capture_output=True,
        )
        return (Path(tmp) / "key-cert.pub").read_text()


@dataclass
class Emulator:
    url: str
    host: InstanceHost
    subnet_id: str = ""
    ami: str = ""
    calls: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION)

    def instances(self, *states: str) -> list[dict[str, Any]]:
        filters = [{"Name": "instance-state-name", "Values": list(states)}] if states else []
        found = []
        for reservation in self.client("ec2").describe_instances(Filters=filters)["Reservations"]:
            found += reservation["Instances"]
        return found

    def set_state(self, instance_id: str, state: str) -> None:
        """Move an instance as AWS would (moto shows every instance running at once)."""
        ec2_backends[ACCOUNT][REGION].get_instance(instance_id)._state.name = state

    def backend_settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "aws": {"region": REGION, "endpoint_url": self.url},
            "ami": self.ami,
            "subnet_id": self.subnet_id,
            "default_image": "ghcr.io/example/task:latest",
            "instance_types": {"default": "c5.xlarge", "big": "c5.4xlarge"},
            **extra,
        }


@contextmanager
def emulator() -> Iterator[Emulator]:
    """The emulator with the test's SSM agent and instance host (also used by bench/ec2_bench.py)."""
    original_listing = getattr(SimpleSystemManagerResponse, "list_command_invocations", None)
    ssm_models.Command.invocation_response = FakeSsmAgent.invocation_response  # type: ignore[method-assign,assignment]
    SimpleSystemManagerResponse.list_command_invocations = FakeSsmAgent.list_command_invocations  # type: ignore[attr-defined]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    host = InstanceHost(url)
    FakeSsmAgent.host = host
    found = Emulator(url=url, host=host)
    try:
        found.subnet_id = found.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]
        found.ami = found.client("ssm").get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
        yield found
    finally:
        FakeSsmAgent.host = None
        host.stop()
        # moto's state lives in this process: the next test starts from an empty account.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5).close()
        server.stop()
        ssm_models.Command.invocation_response = ORIGINAL_INVOCATION  # type: ignore[method-assign]
        if original_listing is None:
            del SimpleSystemManagerResponse.list_command_invocations  # type: ignore[attr-defined]


TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    with emulator() as found:
        yield found
