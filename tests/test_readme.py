"""The README lists every setting the code reads from the environment and every command
`scripthut --help` offers (a variable or command it does not name is one nobody finds)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runs", "backends", "sources", "scripthut_site")
VARIABLE = re.compile(r"^SCRIPTHUT_[A-Z0-9_]*[A-Z0-9]$")
READERS = {"get", "pop", "getenv", "setdefault"}


def is_environment_read(func: ast.expr) -> bool:
    """``os.environ.get``, ``env.get`` (an environment passed along), ``os.getenv``."""
    if not isinstance(func, ast.Attribute) or func.attr not in READERS:
        return False
    receiver = func.value
    if isinstance(receiver, ast.Attribute):
        return receiver.attr == "environ"
    return isinstance(receiver, ast.Name) and receiver.id in ("env", "environ", "os")


def variables_read() -> dict[str, str]:
    """Each ``SCRIPTHUT_*`` name the code reads (``env.get("…")``, ``os.environ["…"]``,
    ``os.getenv("…")``), with where; names the portal only writes (into jobs) are not read."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                key = None
                if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    if is_environment_read(node.func):
                        key = node.args[0].value
                elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                    if isinstance(node.value, ast.Attribute) and node.value.attr == "environ":
                        key = node.slice.value
                if isinstance(key, str) and VARIABLE.match(key):
                    found.setdefault(key, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
    return found


def readme_table_names() -> set[str]:
    text = (ROOT / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return {name for row in rows for name in re.findall(r"`(SCRIPTHUT_[A-Z0-9_]+)`", row)}


def test_every_variable_the_code_reads_is_in_a_readme_table() -> None:
    read = variables_read()
    assert len(read) > 30  # the finder finds them
    documented = readme_table_names()
    missing = {name: where for name, where in read.items() if name not in documented}
    assert missing == {}


def test_every_command_of_scripthut_help_is_in_the_readme() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "scripthut_site.cli", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    listed = re.search(r"\{([\w,-]+)\}", help_text)
    assert listed, help_text
    commands = listed.group(1).split(",")
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The `scripthut` command") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 7)]
    assert [c for c in commands if f"scripthut {c}" not in block] == []
    for command in ("rotate-keys", "pricing", "migrate"):
        assert command in commands, f"`scripthut --help` does not list {command}"


def test_make_bench_runs_every_benchmark_the_readme_lists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Benchmarks") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 7)]
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nbench:") :].split("\n\n")[0]
    listed = {line.split("#")[0].strip() for line in block.splitlines() if "bench/" in line}
    needs_a_deployment = {line for line in listed if line.startswith("REDIS_URL=")}  # said so in the README
    scripts = {script for line in listed - needs_a_deployment for script in re.findall(r"bench/\w+\.py", line)}
    assert sorted(s for s in scripts if s not in target) == []


def test_no_sentence_of_the_readme_is_said_twice() -> None:
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    long = [s for s in sentences if len(s.split()) >= 8 and not s.startswith("|")]
    assert sorted({s for s in long if long.count(s) > 1}) == []
