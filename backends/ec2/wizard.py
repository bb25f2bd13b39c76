"""``scripthut setup-aws-ec2``: the guided set-up of an ``ec2`` backend.

It finds the default VPC and a subnet of it, the latest Amazon Linux 2023 AMI (from the
public SSM parameter), deploys ``cloudformation/scripthut-ec2-iam.yaml`` (or reuses the
stack), appends a complete backend stanza to scripthut.yaml, and prints the one step
left to do by hand: attaching the controller policy to the principal ScriptHut runs as.
Every prompt has a flag; ``--yes`` takes the defaults without asking (CI).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from backends.aws.clients import aws_errors
from backends.base import BackendError, BackendUnavailable
from backends.config import validate_backend_settings

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "scripthut-ec2-iam.yaml"
TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


class WizardError(Exception):
    """A step cannot be done; the message says which and what to pass instead."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        dest="config_path",  # may not exist yet: the CLI's own --config check does not apply
        default=os.environ.get("SCRIPTHUT_CONFIG") or "scripthut.yaml",
        help="the config to append to (default $SCRIPTHUT_CONFIG or ./scripthut.yaml)",
    )
    parser.add_argument("--name", help="backend name (default aws-ec2)")
    parser.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--endpoint-url", help="an emulator or LocalStack instead of AWS")
    parser.add_argument("--vpc-id", help="default: the account's default VPC")
    parser.add_argument("--subnet-id", help="default: the first default subnet of the VPC")
    parser.add_argument("--ami", help="default: the latest Amazon Linux 2023 AMI")
    parser.add_argument("--stack-name", help="CloudFormation stack (default scripthut-ec2-iam)")
    parser.add_argument("--default-image", help="container image of tasks without one")
    parser.add_argument("--instance-type", help="instance type of the default partition (default c5.xlarge)")
    parser.add_argument("--max-instances", help="hard cap on task instances (default 20)")
    parser.add_argument("--yes", action="store_true", help="take every default without asking")


@dataclass
class Asker:
    """A value from its flag, else from the prompt (interactive), else the default."""

    args: argparse.Namespace
    interactive: bool
    read: Callable[[str], str] = input

    def __call__(self, flag: str, label: str, default: str = "") -> str:
        value = getattr(self.args, flag.replace("-", "_"), None)
        if value:
            return str(value)
        if self.interactive:
            value = self.read(f"{label} [{default}]: " if default else f"{label}: ").strip()
        value = value or default
        if not value:
            raise WizardError(f"{label}: no value found; pass --{flag}")
        return str(value)


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    ask = Asker(args, interactive=not args.yes and sys.stdin.isatty())
    try:
        stanza, policy_arn, principal = plan(args, ask, out)
        append_backend(Path(args.config_path), stanza)
    except (WizardError, BackendError, BackendUnavailable) as exc:
        print(f"setup-aws-ec2: {exc}", file=sys.stderr)
        return 2
    print(f"Added backend {stanza['name']!r} to {args.config_path}.", file=out)
    print("One step left, by hand (it needs IAM rights ScriptHut itself should not have):", file=out)
    print(f"  {attach_command(principal, policy_arn)}", file=out)
    return 0


def plan(args: argparse.Namespace, ask: Asker, out: Any) -> tuple[dict[str, Any], str, str]:
    """Discover and deploy; the backend stanza, the controller policy's ARN, and who we are."""
    name = ask("name", "Backend name", "aws-ec2")
    region = ask("region", "AWS region", boto3.Session(profile_name=args.profile).region_name or "")
    with aws_errors("AWS"):
        session = boto3.Session(profile_name=args.profile, region_name=region)
        clients = {
            s: session.client(s, endpoint_url=args.endpoint_url) for s in ("ec2", "ssm", "cloudformation", "sts")
        }
    with aws_errors("AWS"):
        vpc = ask("vpc-id", "VPC", default_vpc(clients["ec2"]))
        subnet = ask("subnet-id", "Subnet", default_subnet(clients["ec2"], vpc))
        ami = ask("ami", "AMI (sshd, SSM agent, docker)", latest_ami(clients["ssm"]))
        stack = ask("stack-name", "CloudFormation stack", "scripthut-ec2-iam")
        print(f"Deploying {stack} (IAM role, instance profile, controller policy)...", file=out)
        outputs = deploy_stack(clients["cloudformation"], stack)
        principal = clients["sts"].get_caller_identity()["Arn"]
    stanza: dict[str, Any] = {"name": name, "type": "ec2", "aws": {"region": region}}
    if args.profile:
        stanza["aws"]["profile"] = args.profile
    if args.endpoint_url:
        stanza["aws"]["endpoint_url"] = args.endpoint_url
    stanza |= {
        "ami": ami,
        "subnet_id": subnet,
        "instance_types": {"default": ask("instance-type", "Instance type", "c5.xlarge")},
        "default_image": ask("default-image", "Default container image", "public.ecr.aws/amazonlinux/amazonlinux:2023"),
        "instance_profile_arn": outputs["InstanceProfileArn"],
        "max_instances": int(ask("max-instances", "Most instances at once", "20")),
        "tag_prefix": "scripthut",
    }
    return stanza, outputs["ControllerPolicyArn"], principal


def default_vpc(ec2: Any) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    return str(vpcs[0]["VpcId"]) if vpcs else ""


def default_subnet(ec2: Any, vpc: str) -> str:
    filters = [{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    subnets = sorted(ec2.describe_subnets(Filters=filters)["Subnets"], key=lambda s: s["AvailabilityZone"])
    return str(subnets[0]["SubnetId"]) if subnets else ""


def latest_ami(ssm: Any) -> str:
    return str(ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"])


def deploy_stack(cloudformation: Any, stack: str) -> dict[str, str]:
    """Create the stack unless it is already there; its outputs."""
    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except cloudformation.exceptions.ClientError:
        found = []
    if not found or found[0]["StackStatus"].startswith("DELETE"):
        cloudformation.create_stack(
            StackName=stack, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"]
        )
        waiter = cloudformation.get_waiter("stack_create_complete")
        waiter.wait(StackName=stack, WaiterConfig={"Delay": 2, "MaxAttempts": 300})
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs", [])}
    if not {"InstanceProfileArn", "ControllerPolicyArn"} <= set(outputs):
        raise WizardError(f"stack {stack} has no InstanceProfileArn/ControllerPolicyArn outputs: is it ours?")
    return outputs


def attach_command(principal: str, policy_arn: str) -> str:
    """The ``aws iam`` command attaching the policy to the caller (a user or a role)."""
    # arn:aws:iam::123:user/path/alice, arn:aws:sts::123:assumed-role/Role/session, ...
    resource = principal.split(":", 5)[-1]
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        return f"aws iam attach-role-policy --role-name {rest.split('/')[0]} --policy-arn {policy_arn}"
    if kind == "role":
        return f"aws iam attach-role-policy --role-name {rest.rsplit('/', 1)[-1]} --policy-arn {policy_arn}"
    if kind == "user":
        return f"aws iam attach-user-policy --user-name {rest.rsplit('/', 1)[-1]} --policy-arn {policy_arn}"
    return f"attach {policy_arn} to the IAM user or role ScriptHut runs as (you are {principal})"


def append_backend(config: Path, stanza: dict[str, Any]) -> None:
    """Append ``stanza`` to the ``backends`` list of the config, keeping the rest of the
    file (comments included) as it is; refuse a name already used."""
    validate_backend_settings("ec2", stanza)
    text = config.read_text() if config.exists() else ""
    current = yaml.safe_load(text) or {}
    if not isinstance(current, dict):
        raise WizardError(f"{config} is not a YAML mapping")
    backends = current.get("backends") or []
    if any(isinstance(b, dict) and b.get("name") == stanza["name"] for b in backends):
        raise WizardError(f"{config} already has a backend named {stanza['name']!r}: pass another --name")
    item = yaml.safe_dump([stanza], sort_keys=False, default_flow_style=False)
    config.write_text(insert_item(text, item, has_backends="backends" in current))
    reread = yaml.safe_load(config.read_text())
    if reread["backends"][-1] != stanza:
        raise WizardError(f"{config}: the appended stanza did not read back as written")


def insert_item(text: str, item: str, *, has_backends: bool) -> str:
    """``text`` with the list item ``item`` added at the end of its ``backends:`` block."""
    if not has_backends:
        return text + ("" if text.endswith("\n") or not text else "\n") + "backends:\n" + indent(item, "  ")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("backends:"))
    inline = lines[start].split(":", 1)[1].split("#")[0].strip()
    if inline not in ("", "[]"):
        raise WizardError("the backends list is written inline: add the stanza by hand")
    lines[start] = "backends:\n" if inline == "[]" else lines[start]
    end = block_end(lines, start)
    if not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    return "".join(lines[:end]) + indent(item, item_prefix(lines[start + 1 : end])) + "".join(lines[end:])


def block_end(lines: list[str], start: int) -> int:
    """The index after the last non-blank line of the top-level block starting at ``start``."""
    end = next((i for i in range(start + 1, len(lines)) if TOP_LEVEL_KEY.match(lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block stay after it
    return end


def item_prefix(block: list[str]) -> str:
    """The indentation of the block's list items (two spaces if it has none yet)."""
    items = [line for line in block if line.lstrip().startswith("- ")]
    return items[0][: len(items[0]) - len(items[0].lstrip())] if items else "  "


def indent(item: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in item.splitlines(keepends=True))
