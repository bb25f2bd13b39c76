"""What PBS is sent: job scripts, qsub arguments, and the submit batch's qsub helper.

- Log paths. PBS expands neither ``~`` nor ``$HOME`` in ``-o``/``-e``, and qsub turns a
  relative path into ``host:$PWD/path``. The submit batch runs qsub from ``$HOME``, so
  ``~/x`` is passed as the home-relative ``x`` (and a relative path as the working
  dir, made home-relative, joined with it): qsub records the absolute path itself and
  the portal never needs to know the home directory.
- Scripts. Directives end with a ``true`` line: qsub reads ``#PBS`` lines only up to
  the first command, so nothing below it (values with newlines) can add one.
- Submitting. The batch (one ``bash -s`` round trip) writes each job script to a temp
  file on the login node first (``QSUB_HELPERS``): PBS's qsub reads it on stdin, Slurm's
  ``qsub`` wrapper (``slurm-wlm-torque``, a perl script over sbatch, found by its
  ``use Slurm``) only as a file operand and never reads stdin. The wrapper also pastes
  its arguments unquoted into a ``sh -c`` line, so there any argument a shell would
  change is refused (the job is reported rejected) instead of passed on.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from backends.base import JobSpec
from backends.pbs.parsing import TAG_VARIABLE
from backends.units import parse_duration, parse_memory_mb

MAX_NAME = 236  # PBS_MAXJOBNAME in OpenPBS
# Prepended to the submit batch: ``qsub`` becomes a function that takes the job script
# on stdin (the batch's here-document, as for sbatch), keeps it in a temp file and hands
# that to the real qsub: on stdin for PBS (OpenPBS, PBS Pro, Torque; also the tests'
# fake), as the script operand for Slurm's wrapper, which takes no other form. The temp
# directory goes when the batch ends. The wrapper runs ``sh -c "sbatch <args unquoted>"``:
# an argument with anything a shell would split or expand is refused, never passed.
QSUB_HELPERS = r"""
_sh_tmp=$(mktemp -d "${TMPDIR:-/tmp}/scripthut-qsub.XXXXXX") || { echo 'cannot create a temp dir' >&2; exit 1; }
trap 'rm -rf -- "$_sh_tmp"' EXIT
_sh_slurm_qsub=
_sh_qsub_path=$(command -v qsub 2>/dev/null) || _sh_qsub_path=
if [ -f "$_sh_qsub_path" ] && grep -Iqs '^use Slurm' "$_sh_qsub_path"; then
    _sh_slurm_qsub=1
fi
qsub() {
    local script="$_sh_tmp/job" arg
    cat > "$script" || return 1
    if [ -z "$_sh_slurm_qsub" ]; then
        command qsub "$@" < "$script"
        return
    fi
    for arg in "$@" "$script"; do
        case $arg in
        '' | *[!A-Za-z0-9_.,:=+@%/-]*)
            printf "qsub: Slurm's qsub wrapper passes its arguments to a shell unquoted; refusing %q\n" "$arg"
            return 2 ;;
        esac
    done
    command qsub "$@" "$script" < /dev/null
}
"""

SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.@-]+$")  # queue, account, tag
SAFE_DIRECTIVE = re.compile(r"^[A-Za-z0-9_.,=+@%/~-]+$")
MEMORY = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
GPUS = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?(?::(\d+))?$")


def pbs_header(job: JobSpec, *, queue: str, account: str) -> list[str]:
    """The job script's ``#PBS`` directives (the shebang above and the shared body below
    are :class:`backends.ssh.scheduler.SshScheduler`'s)."""
    if not SAFE_TOKEN.match(job.tag):
        raise ValueError(f"tag {job.tag!r} has characters PBS does not keep in Variable_List")
    select = f"select=1:ncpus={int(job.cpus)}:mem={pbs_memory(job.memory)}"
    gpus = pbs_gpus(job.gres)
    if gpus:
        select += f":ngpus={gpus}"
    directives = [
        ("-N", safe_job_name(job.name)),
        ("-l", select),
        ("-l", f"walltime={pbs_walltime(job.time_limit)}"),
    ]
    if queue:
        directives.append(("-q", _token("queue", queue)))
    if account:
        directives.append(("-A", _token("account", account)))
    for flag, path in (("-o", job.output_file), ("-e", job.error_file)):
        if path:
            directives.append((flag, _directive_value(flag, pbs_path(path, job.working_dir))))
    lines = [f"#PBS {flag} {value}" for flag, value in directives]
    lines.append(f"# scripthut-tag: {job.tag}")
    # qsub reads #PBS lines up to the first command: end the header here, so that no
    # later line (a task id with a newline in the body's first comment) adds one.
    lines.append("true  # end of the #PBS directives")
    return lines


def qsub_argv(job: JobSpec) -> list[str]:
    """qsub's arguments for a job script read from stdin, unquoted.

    No script operand: the batch's qsub function adds the script (QSUB_HELPERS). The
    command line repeats -N/-o/-e (it wins over the directives) and carries the tag
    for find_submitted.
    """
    argv = ["qsub", "-N", safe_job_name(job.name)]
    if job.output_file:
        argv += ["-o", pbs_path(job.output_file, job.working_dir)]
    if job.error_file:
        argv += ["-e", pbs_path(job.error_file, job.working_dir)]
    return [*argv, "-v", f"{TAG_VARIABLE}={job.tag}"]


def safe_job_name(name: str) -> str:
    """A PBS job name: letters, digits and ``_.-``, starting with a letter, at most 236 chars.

    qsub rejects a space in -N in every form (fixtures 08, 08b, 08c); ``Solve Model``
    becomes ``Solve_Model``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    if not cleaned:
        return "task"
    if not cleaned[0].isalpha():
        cleaned = "task_" + cleaned  # older PBS and Torque want a letter first
    return cleaned[:MAX_NAME]


def pbs_memory(value: str) -> str:
    """``4G`` -> ``4gb``, ``512M`` -> ``512mb``, ``1024`` -> ``1024mb``, ``1.5G`` -> ``1536mb``."""
    mb = parse_memory_mb(value)  # validates, and handles fractions
    match = MEMORY.match(value)
    if match:
        return f"{int(match.group(1))}{(match.group(2) or 'M').lower()}b"
    return f"{mb}mb"


def pbs_walltime(value: str) -> str:
    """A task time limit (``1:00:00``, ``2-00:00:00``, ``90``) as PBS ``HH:MM:SS`` (hours may pass 24)."""
    hours, rest = divmod(parse_duration(value), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def pbs_gpus(gres: str) -> int:
    """GPUs from a Slurm-style ``gres``: ``gpu``, ``gpu:2``, ``gpu:a100:2``."""
    gres = gres.strip()
    if not gres:
        return 0
    match = GPUS.match(gres)
    if not match:
        raise ValueError(f"gres {gres!r} is not supported on PBS (only gpu[:type][:count])")
    return int(match.group(1) or 1)


def pbs_path(path: str, working_dir: str) -> str:
    """A log path as qsub should get it: absolute, or relative to ``$HOME`` (see module doc).

    ``~/x`` -> ``x``; ``/x`` -> ``/x``; a relative path is relative to the working dir.
    """
    if any(not c.isprintable() for c in path) or ":" in path:
        # qsub reads ``a:b`` as host ``a``, path ``b``.
        raise ValueError(f"log path {path!r} contains a colon or a control character")
    if path.startswith("/"):
        return path
    if path == "~" or path.startswith("~/"):
        return path[2:] or "."
    if path.startswith("~"):
        raise ValueError(f"log path {path!r}: only ~/ (the login's home) is supported")
    base = pbs_path(working_dir or "~", "~")
    return path if base == "." else str(PurePosixPath(base) / path)


def _token(what: str, value: str) -> str:
    if not SAFE_TOKEN.match(value):
        raise ValueError(f"{what} {value!r} has characters PBS does not accept")
    return value


def _directive_value(flag: str, value: str) -> str:
    """A value on a ``#PBS`` line: plain when safe, else double-quoted (qsub strips the quotes)."""
    if any(not c.isprintable() for c in value):
        raise ValueError(f"{flag} value {value!r} contains a newline or a control character")
    if SAFE_DIRECTIVE.match(value):
        return value
    if '"' in value or "\\" in value:
        raise ValueError(f"{flag} value {value!r} contains a double quote or a backslash")
    return f'"{value}"'
