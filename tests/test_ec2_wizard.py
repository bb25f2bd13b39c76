"""``cloudformation/scripthut-ec2-iam.yaml`` deployed to the emulator, and
``scripthut setup-aws-ec2`` run as a user would (the installed command, non-interactive)
against it over real HTTP. The emulator does not attach ManagedPolicyArns to a role, so
that the task role really has AmazonSSMManagedInstanceCore is not checked here."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backends.ec2.wizard import Asker, attach_command
from tests.aws_ec2 import AMI_PARAMETER, REGION, Emulator, moto_ec2  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTHUT = str(Path(sys.executable).with_name("scripthut"))
EXISTING = """\
# our portal
server:
  port: 8000
backends:
  # the workstation
  - name: local
    type: local
    max_concurrent: 2

sources: []  # none yet
"""


@pytest.mark.aws
def test_template_deploys_with_the_policies_of_the_spec(moto_ec2: Emulator):  # noqa: F811
    cloudformation = moto_ec2.client("cloudformation")
    template = (ROOT / "cloudformation" / "scripthut-ec2-iam.yaml").read_text()
    cloudformation.create_stack(StackName="iam", TemplateBody=template, Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cloudformation.describe_stacks(StackName="iam")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iam = moto_ec2.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName="ScriptHutTask")["InstanceProfile"]
    assert profile["Arn"] == outputs["InstanceProfileArn"] and profile["Roles"][0]["RoleName"] == "ScriptHutTaskRole"
    policy = iam.get_policy(PolicyArn=outputs["ControllerPolicyArn"])["Policy"]
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    document = version["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    actions = {
        a for s in document["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    spec = json.loads((ROOT / "cloudformation" / "scripthut-controller-ec2-policy.json").read_text())
    spec_actions = {
        a for s in spec["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == spec_actions
    assert {"ec2:RunInstances", "iam:PassRole", "ssm:SendCommand", "ec2-instance-connect:SendSSHPublicKey"} <= actions
    pass_role = next(s for s in document["Statement"] if s["Action"] == "iam:PassRole")
    assert pass_role["Resource"] == outputs["TaskRoleArn"]


def all_actions(document: dict) -> set[str]:
    statements = document["Statement"]
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def wizard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPTHUT, "setup-aws-ec2", *args], env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.aws
def test_wizard_non_interactive_appends_a_complete_stanza(moto_ec2: Emulator, tmp_path: Path):  # noqa: F811
    config = tmp_path / "scripthut.yaml"
    config.write_text(EXISTING)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {"PYTHONPATH": str(ROOT), "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"), "SCRIPTHUT_CONFIG": str(config)}
    flags = ["--yes", "--region", REGION, "--endpoint-url", moto_ec2.url, "--default-image", "ghcr.io/org/img:1"]
    done = wizard(env, *flags)
    assert done.returncode == 0, done.stderr
    ec2 = moto_ec2.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    outputs = moto_ec2.client("cloudformation").describe_stacks(StackName="scripthut-ec2-iam")["Stacks"][0]["Outputs"]
    by_key = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    text = config.read_text()
    assert text.startswith(EXISTING.split("\n\n")[0] + "\n") and text.endswith("\n\nsources: []  # none yet\n")
    assert "# the workstation" in text
    backends = yaml.safe_load(text)["backends"]
    assert [b["name"] for b in backends] == ["local", "aws-ec2"]
    stanza = backends[1]
    assert stanza["type"] == "ec2" and stanza["aws"] == {"region": REGION, "endpoint_url": moto_ec2.url}
    assert stanza["ami"] == moto_ec2.client("ssm").get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    assert stanza["subnet_id"] in {s["SubnetId"] for s in subnets}
    assert stanza["instance_profile_arn"] == by_key["InstanceProfileArn"]
    assert stanza["default_image"] == "ghcr.io/org/img:1" and stanza["instance_types"] == {"default": "c5.xlarge"}
    # The one manual step, for the caller the emulator says we are.
    assert f"--policy-arn {by_key['ControllerPolicyArn']}" in done.stdout and "aws iam attach-" in done.stdout
    # The portal takes the file as it is now.
    imported = subprocess.run([SCRIPTHUT, "import-config", str(config)], env=env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    # A second run reuses the stack but refuses a name already taken.
    again = wizard(env, *flags)
    assert again.returncode == 2 and "already has a backend named 'aws-ec2'" in again.stderr


@pytest.mark.aws
def test_wizard_says_which_flag_is_missing(moto_ec2: Emulator, tmp_path: Path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_DEFAULT_REGION", "AWS_REGION")}
    env |= {"PYTHONPATH": str(ROOT), "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"), "AWS_CONFIG_FILE": os.devnull}
    done = wizard(env, "--yes", "--endpoint-url", moto_ec2.url, "--config", str(tmp_path / "s.yaml"))
    assert done.returncode == 2 and "AWS region: no value found; pass --region" in done.stderr
    assert not (tmp_path / "s.yaml").exists()


def test_attach_command_names_the_principal():
    arn = "arn:aws:iam::aws:policy/X"
    assert attach_command("arn:aws:iam::1:user/team/alice", arn).startswith(
        "aws iam attach-user-policy --user-name alice"
    )
    assert "--role-name Ops " in attach_command("arn:aws:sts::1:assumed-role/Ops/session", arn)


def test_interactive_prompts_offer_the_discovered_default():
    args = argparse.Namespace(region=None, name="given")
    answers = iter(["", "eu-west-1"])
    asked: list[str] = []

    def read(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    ask = Asker(args, interactive=True, read=read)
    assert ask("name", "Backend name", "aws-ec2") == "given"  # a flag is never asked
    assert ask("vpc-id", "VPC", "vpc-1") == "vpc-1"  # Enter takes the default
    assert ask("region", "AWS region") == "eu-west-1"
    assert asked == ["VPC [vpc-1]: ", "AWS region: "]
