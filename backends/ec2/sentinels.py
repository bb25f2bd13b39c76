"""Which running instances have finished their task: SSM Run Command, not one SSH session each.

Each poll sends one ``send_command`` addressed by tag (``<prefix>:backend = <name>``:
every managed instance of the backend, however many) that prints the sentinel file if
it exists, and reads the answers of the previous poll's command with
``list_command_invocations`` (Details, 50 instances a page). An instance whose SSM
agent has not registered yet is simply not targeted, where a list of instance ids
would make the whole call fail. So a poll costs 1 + ceil(instances / 50) SSM calls,
and a finish is seen one poll after it happened.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import boto3

from backends.aws.clients import aws_errors, client
from backends.ec2.instances import count_calls
from backends.ec2.settings import Ec2Settings
from backends.ec2.userdata import DONE_PATH

DONE = re.compile(r"^scripthut-done:(-?\d+)\s*$", re.MULTILINE)
SENTINEL_COMMAND = f"if [ -f {DONE_PATH} ]; then printf 'scripthut-done:%s\\n' \"$(cat {DONE_PATH})\"; fi"


class RunCommandSentinels:
    def __init__(self, settings: Ec2Settings, backend_name: str, boto_session: boto3.Session, calls: Counter[str]):
        self.target = {"Key": f"tag:{settings.tag_prefix}:backend", "Values": [backend_name]}
        self.ssm = count_calls(client(settings.aws, "ssm", boto_session), calls)
        self.sent: str | None = None  # the command id whose answers the next poll reads

    def collect(self) -> dict[str, int]:
        """Exit codes found by the previous poll's command, by instance id."""
        if self.sent is None:
            return {}
        codes: dict[str, int] = {}
        with aws_errors("ssm ListCommandInvocations"):
            pages = self.ssm.get_paginator("list_command_invocations").paginate(CommandId=self.sent, Details=True)
            self.sent = None  # read once
            for page in pages:
                for invocation in page.get("CommandInvocations", []):
                    code = exit_code_of(invocation)
                    if code is not None:
                        codes[invocation["InstanceId"]] = code
        return codes

    def send(self) -> None:
        """Ask every managed instance of the backend for its sentinel (answers: next poll)."""
        with aws_errors("ssm SendCommand"):
            response = self.ssm.send_command(
                DocumentName="AWS-RunShellScript",
                Targets=[self.target],
                Parameters={"commands": [SENTINEL_COMMAND]},
                TimeoutSeconds=60,
                MaxConcurrency="100%",
                Comment="scripthut: read task sentinels",
            )
        self.sent = response["Command"]["CommandId"]


def exit_code_of(invocation: dict[str, Any]) -> int | None:
    output = "".join(plugin.get("Output", "") for plugin in invocation.get("CommandPlugins", []))
    match = DONE.search(output)
    return int(match.group(1)) if match else None
