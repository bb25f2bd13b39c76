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


# Where a job script leaves its start and end markers (in the home of the account it runs
# as, which the login node shares): <dir>/<run id>/<tag>.start and .end.
MARKERS_DIR = ".cache/scripthut/ends"


# The signals a scheduler ends a job with, and their numbers (the exit code is 128 + it).
END_SIGNALS = (("TERM", 15), ("INT", 2), ("HUP", 1), ("QUIT", 3), ("USR1", 10), ("USR2", 12), ("XCPU", 24))


def end_marker_lines(job: JobSpec) -> list[str]:
    """Lines that make the job write ``<tag>.start`` (a timestamp and the node) now and, when the script
    exits normally, ``<tag>.end`` (exit code and timestamp), the way Nextflow leaves
    ``.exitcode``: the portal reads them every few seconds instead of asking the scheduler.
    A job killed by a signal (cancel, time limit, out of memory) leaves no end marker:
    the scheduler's own poll says what happened to it."""
    marker = f'"$HOME"/{MARKERS_DIR}/{shlex.quote(job.run_id)}/{shlex.quote(job.tag)}'
    end = (
        '_scripthut_rc=$?; [ "$_scripthut_rc" -lt 128 ] && '
        'printf "%s %s\\n" "$_scripthut_rc" "$(date +%s.%N)" > "$_scripthut_end.tmp" && '
        'mv -f -- "$_scripthut_end.tmp" "$_scripthut_end.end"'
    )
    # bash runs the EXIT trap also when a signal ends it, with $? of the last command that
    # finished (0 for a job cancelled in its first command): each signal the scheduler
    # sends (scancel, time limit, preemption) drops the EXIT trap first, so no end marker.
    killed = [f"trap {shlex.quote(f'trap - EXIT; exit {128 + number}')} {name}" for name, number in END_SIGNALS]
    return [
        "# ScriptHut sees this job's end from these markers within seconds",
        f"_scripthut_end={marker}",
        'mkdir -p -- "${_scripthut_end%/*}" && echo "$(date +%s.%N) $HOSTNAME" > "$_scripthut_end.start"',
        f"trap {shlex.quote(end)} EXIT",
        *killed,
    ]
