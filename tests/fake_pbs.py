"""A PBS server for tests that has none: ``qsub``, ``qstat`` and ``qdel`` on this host that
run each job script for real (bash, in the background) and answer in the recorded
OpenPBS 23.06 text form (backends/pbs/fixtures): a running job is
``01-ok.qstat-f-running.txt``, a finished one ``01-ok.qstat-fx.txt`` (exit 0) or
``02-exit3.qstat-fx.txt`` (another exit code), a deleted one
``04-qdel-running.qstat-fx.txt``, with the job's id, name, tag and paths put in. Like an
older server, ``qstat`` has no ``-F json``: the adapter finds that out and reads text.

:class:`LocalShell` stands in for the SSH transport (the same ``run``, ``run_script``,
``read_file``), running ``bash`` here with the fake commands first on ``PATH`` and
``home`` as ``$HOME``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backends.base import CommandResult

FIXTURES = Path(__file__).resolve().parent.parent / "backends" / "pbs" / "fixtures"

COMMANDS = r"""
import json, os, re, signal, subprocess, sys
from pathlib import Path

STATE = Path(os.environ["FAKE_PBS_DIR"])
FIXTURES = Path(os.environ["FAKE_PBS_FIXTURES"])


def jobs():
    return {p.stem: json.loads(p.read_text()) for p in sorted(STATE.glob("*.json"))}


def save(job):
    (STATE / f"{job['n']}.json").write_text(json.dumps(job))


def qsub(args):
    job = {"n": len(list(STATE.glob("*.json"))) + 1, "name": "STDIN", "tag": "", "out": "", "err": ""}
    job["id"] = f"{job['n']}.vm"
    flags = {"-N": "name", "-o": "out", "-e": "err"}
    while args:
        flag = args.pop(0)
        value = args.pop(0) if args and flag.startswith("-") else ""
        if flag in flags:
            job[flags[flag]] = os.path.abspath(value)
        if flag == "-N":
            job["name"] = value
        if flag == "-v" and value.startswith("SCRIPTHUT_TAG="):
            job["tag"] = value.partition("=")[2]
    script = STATE / f"{job['n']}.sh"
    script.write_text(sys.stdin.read())
    exit_file = STATE / f"{job['n']}.exit"
    runner = f'bash "{script}" >"{job["out"] or "/dev/null"}" 2>"{job["err"] or "/dev/null"}"; echo $? >"{exit_file}"'
    # Nothing of the caller's: qsub's caller must not wait for the job's end.
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    job["pid"] = subprocess.Popen(["bash", "-c", runner], start_new_session=True, **quiet).pid
    save(job)
    print(job["id"])


def state(job):
    if job.get("deleted"):
        return "deleted", None
    exit_file = STATE / f"{job['n']}.exit"
    text = exit_file.read_text().strip() if exit_file.exists() else ""
    return ("finished", int(text)) if text else ("running", None)


def render(job):
    how, code = state(job)
    template = {"running": "01-ok.qstat-f-running.txt", "deleted": "04-qdel-running.qstat-fx.txt"}.get(how)
    template = template or ("01-ok.qstat-fx.txt" if code == 0 else "02-exit3.qstat-fx.txt")
    text = (FIXTURES / template).read_text()
    text = re.sub(r"^Job Id: .*$", f"Job Id: {job['id']}", text, count=1, flags=re.M)
    text = re.sub(r"^    Job_Name = .*$", f"    Job_Name = {job['name']}", text, count=1, flags=re.M)
    text = re.sub(r"^    Output_Path = .*$", f"    Output_Path = vm:{job['out']}", text, count=1, flags=re.M)
    text = re.sub(r"^    Error_Path = .*$", f"    Error_Path = vm:{job['err']}", text, count=1, flags=re.M)
    if code is not None:
        text = re.sub(r"^    Exit_status = .*$", f"    Exit_status = {code}", text, count=1, flags=re.M)
    if job["tag"]:
        text = text.replace("PBS_O_HOST=vm\n", f"PBS_O_HOST=vm,SCRIPTHUT_TAG={job['tag']}\n", 1)
    return text


def qstat(args):
    if "-F" in args:
        print("qstat: invalid option -- 'F'\nusage:\n qstat [-f] [-x] [job_identifier...]", file=sys.stderr)
        return 2
    history = "-x" in args
    wanted = [a for a in args if not a.startswith("-")]
    known = {job["id"]: job for job in jobs().values()}
    code = 0
    for job_id in wanted or list(known):
        job = known.get(job_id)
        if job is None:
            print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
            code = 153
        elif history or state(job)[0] == "running":
            sys.stdout.write(render(job))
    return code


def qdel(args):
    known = {job["id"]: job for job in jobs().values()}
    code = 0
    for job_id in args:
        job = known.get(job_id)
        if job is None:
            print(f"qdel: Unknown Job Id {job_id}", file=sys.stderr)
            code = 35
        elif state(job)[0] != "running":
            print(f"qdel: Job has finished {job_id}", file=sys.stderr)
            code = 35
        else:
            try:
                os.killpg(job["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            job["deleted"] = True
            save(job)
    return code


command = os.path.basename(sys.argv[0])
sys.exit({"qsub": qsub, "qstat": qstat, "qdel": qdel}[command](sys.argv[1:]) or 0)
"""


def install(root: Path) -> dict[str, str]:
    """The fake commands under ``root``; the environment that puts them first on PATH."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True)
    state.mkdir()
    for name in ("qsub", "qstat", "qdel"):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{COMMANDS}")
        path.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_PBS_DIR": str(state),
        "FAKE_PBS_FIXTURES": str(FIXTURES),
    }


class LocalShell:
    """The SSH transport's interface, run with bash on this host as ``home``'s user."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = {**os.environ, **env, "HOME": str(home)}

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = 120) -> CommandResult:
        done = subprocess.run(
            ["bash", "-c", command],
            input=stdin or b"",
            capture_output=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
        )
        return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    def run_script(self, script: str, *, timeout: float = 300) -> CommandResult:
        return self.run("bash -s", stdin=script.encode(), timeout=timeout)

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        resolved = self.home / path[2:] if path.startswith("~/") else Path(path)
        return resolved.read_bytes()[-max_bytes:].decode(errors="replace")

    def close(self) -> None:
        return None
