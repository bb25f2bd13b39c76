"""The script body every backend shares: env exports, extra_init, cd, command.

Each backend module adds its own header (``#SBATCH``, ``#PBS``, ...) above it.
Every value from a task or a config is quoted; the task's ``command`` and the
environment's ``extra_init`` are shell code by design and go in as written.
"""

from __future__ import annotations

import shlex

from backends.base import JobSpec


def shell_path(path: str) -> str:
    """Quote a path but keep a leading ``~`` or ``~/`` meaning the home directory."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"'
    return shlex.quote(path)


def shebang(login_shell: bool) -> str:
    return "#!/bin/bash -l" if login_shell else "#!/bin/bash"


def script_body(job: JobSpec) -> str:
    lines = [f"# scripthut task {shlex.quote(job.task_id)} of run {job.run_id} (tag {job.tag})"]
    for key, value in job.env.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    if job.extra_init.strip():
        lines += ["", job.extra_init.rstrip("\n")]
    message = shlex.quote(f"scripthut: cannot cd to {job.working_dir}")
    lines += [
        "",
        # A failed cd fails the task instead of running the command somewhere else.
        f"cd {shell_path(job.working_dir)} || {{ echo {message} >&2; exit 1; }}",
        job.command,
        "",
    ]
    return "\n".join(lines)
