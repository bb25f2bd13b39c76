"""The real SSH-over-SSM connector, as far as the emulator goes: the Instance Connect key
push reaches it; ``start_session`` is where the emulator stops (moto answers HTTP 500
NotImplemented), and the failure is a clear BackendUnavailable/BackendError, never a
crash. The session-manager-plugin command line is checked against what the AWS CLI runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import boto3
import pytest

from backends.base import BackendError, BackendUnavailable
from backends.ec2.connector import SsmConnector, ephemeral_key
from backends.ec2.settings import Ec2Settings
from tests.aws_ec2 import REGION, Emulator, moto_ec2  # noqa: F401  (fixture)


def connector(url: str) -> SsmConnector:
    settings = Ec2Settings.model_validate(
        {"name": "e", "type": "ec2", "aws": {"region": REGION, "endpoint_url": url}, "ami": "a", "subnet_id": "s"}
    )
    return SsmConnector(settings, boto3.Session(region_name=REGION))


@pytest.mark.aws
def test_without_the_plugin_the_reason_is_named(moto_ec2: Emulator, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendUnavailable, match="session-manager-plugin is not installed"):
        connector(moto_ec2.url).open("i-123")


@pytest.mark.aws
def test_key_is_pushed_then_the_emulator_stops_at_start_session(moto_ec2: Emulator, tmp_path: Path, monkeypatch):  # noqa: F811
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\nexit 1\n")
    plugin.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    ssm = connector(moto_ec2.url)
    with pytest.raises((BackendUnavailable, BackendError), match="start_session"):
        ssm.open("i-0123456789abcdef0")
    assert ssm.calls["ec2-instance-connect:SendSSHPublicKey"] == 1 and ssm.calls["ssm:StartSession"] == 1


@pytest.mark.aws
def test_plugin_command_is_what_the_aws_cli_runs(moto_ec2: Emulator):  # noqa: F811
    ssm = connector(moto_ec2.url)
    started = {"SessionId": "s-1", "StreamUrl": "wss://x", "TokenValue": "t", "ResponseMetadata": {}}
    parameters = {"Target": "i-1", "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["22"]}}
    command = ssm.plugin_command("/usr/bin/session-manager-plugin", started, parameters)
    assert command[0] == "/usr/bin/session-manager-plugin"
    assert json.loads(command[1]) == {"SessionId": "s-1", "StreamUrl": "wss://x", "TokenValue": "t"}
    assert command[2:5] == [REGION, "StartSession", ""] and json.loads(command[5]) == parameters
    assert command[6] == moto_ec2.url
    assert shlex.split(shlex.join(command)) == command  # paramiko's ProxyCommand splits it back like this


def test_ephemeral_keys_are_fresh_ed25519():
    (one, public_one), (_, public_two) = ephemeral_key(), ephemeral_key()
    assert public_one.startswith("ssh-ed25519 ") and public_one != public_two and one.can_sign()
