"""PBS (OpenPBS, PBS Professional, Torque) over SSH: qsub in batches, one qstat per poll.

How the recorded OpenPBS 23.06 output (tests/fixtures/pbs/) shapes this module:

- Tags. Every job is submitted with ``-v SCRIPTHUT_TAG=<tag>``; PBS keeps it in the
  job's ``Variable_List``, which ``qstat -f`` shows, so an interrupted submit is found
  again by tag with one ``qstat -f -x`` listing.
- Log paths. PBS expands neither ``~`` nor ``$HOME`` in ``-o``/``-e``, and qsub turns a
  relative path into ``host:$PWD/path``. The submit batch runs qsub from ``$HOME``, so
  ``~/x`` is passed as the home-relative ``x`` (and a relative path as the working
  dir, made home-relative, joined with it): qsub records the absolute path itself and
  the portal never needs to know the home directory.
- Polling. One remote call: ``qstat -f -F json`` (every live job: the dashboard's
  observed list) and ``qstat -f -x -F json <our ids>`` (our jobs, finished ones from
  the job history). Servers without ``-F json`` get the text form, servers without
  ``-x`` (Torque, where ``-x`` means XML, and Slurm's ``qstat`` wrapper) plain
  ``qstat -f``: detected once per adapter and remembered. There, a job that left
  qstat is UNKNOWN and the engine's grace period decides.
- Scripts. Directives end with a ``true`` line: qsub reads ``#PBS`` lines only up to
  the first command, so nothing below it (values with newlines) can add one.
- Submitting. The batch (one ``bash -s`` round trip) writes each job script to a temp
  file on the login node first (``QSUB_HELPERS``): PBS's qsub reads it on stdin, Slurm's
  ``qsub`` wrapper (``slurm-wlm-torque``, a perl script over sbatch, found by its
  ``use Slurm``) only as a file operand and never reads stdin. The wrapper also pastes
  its arguments unquoted into a ``sh -c`` line, so there any argument a shell would
  change is refused (the job is reported rejected) instead of passed on.
- Slurm's wrappers, as far as they go: job ids are plain numbers (``2042``); ``qstat
  -f`` shows no ``Variable_List`` (so ``find_submitted`` cannot find tags: an
  interrupted submit is queued again) and no exit status (``C`` is any end, so a
  finished job is UNKNOWN and the engine's grace period ends it as failed); ``qdel``
  reports errors on stdout; ``pbsnodes`` has no ``-v``.
- Outcomes. ``job_state`` F (``X`` for an array subjob, Torque's C) is final and read
  with ``substate`` and ``Exit_status``: 92 finished / 93 failed / 91 deleted;
  Exit_status -29 is a walltime kill, 256+N a kill by signal N (qdel: 271), and a job
  deleted before it ran, also by a dependency that can never be met, has none.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from django.utils import timezone

from backends.base import BackendError, ClusterInfo, JobSpec, JobState, JobStatus, PollResult
from backends.remote import HOLD_SUBMIT_LOCK, SUBMIT_LOCK_WAIT_SECONDS, SSHBackend
from backends.scripts import script_body, shebang, shell_path
from backends.units import clock_seconds, parse_duration, parse_memory_mb, size_mb

log = logging.getLogger("backends.pbs")

TAG_VARIABLE = "SCRIPTHUT_TAG"
MAX_NAME = 236  # PBS_MAXJOBNAME in OpenPBS
IDS_PER_COMMAND = 500  # job ids per qstat/qdel invocation: keeps argv far below ARG_MAX
RC_MARK = "SCRIPTHUT-QSTAT-RC"

# qstat flavours, best first. "json" and "text" read finished jobs from the job
# history (-x); "plain" cannot (Torque, Slurm's wrapper, very old PBS).
MODES = ("json", "text", "plain")
LIVE_COMMAND = {"json": "qstat -f -F json", "text": "qstat -f", "plain": "qstat -f"}
HISTORY_COMMAND = {"json": "qstat -f -x -F json", "text": "qstat -f -x", "plain": ""}
UNSUPPORTED_OPTION = re.compile(r"(invalid|illegal|unknown|unrecognized) option|^usage:", re.IGNORECASE | re.MULTILINE)
# qstat/qdel complaints about single jobs that are not errors for us.
BENIGN = re.compile(r"Unknown Job Id|Job has finished|use -x or -H|Request invalid for state of job", re.IGNORECASE)
# Slurm's qdel wrapper prints its errors on stdout ("qdel: Kill job error on job id 5: ...").
QDEL_STDOUT_ERROR = re.compile(r"^qdel: ", re.MULTILINE)

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

# Exit_status below zero: PBS could not run the job or killed it (job.h, JOB_EXEC_*).
OPENPBS_EXEC_CODES = {
    -1: "PBS could not start the job",
    -2: "PBS could not start the job (after creating its files)",
    -3: "PBS could not start the job (retrying)",
    -10: "invalid user or group for the job",
    -24: "ncpus burst limit exceeded",
    -25: "ncpus sum limit exceeded",
    -26: "vmem limit exceeded",
    -27: "memory limit exceeded",
    -28: "cput limit exceeded",
    -29: "walltime exceeded",
}
TORQUE_EXEC_CODES = {  # Torque reports ``exit_status`` (lower case) and its own numbers
    -1: "PBS could not start the job",
    -2: "PBS could not start the job (after creating its files)",
    -3: "PBS could not start the job (retrying)",
    -10: "memory limit exceeded",
    -11: "walltime exceeded",
    -12: "cput limit exceeded",
}
HOLDS = {"u": "user hold", "o": "operator hold", "s": "system hold", "p": "bad password hold"}
SIGNALS = {1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}
DEAD_NODE_STATES = {"down", "offline", "state-unknown", "stale", "unresolvable", "sleep", "maintenance"}
MONTHS = {m: n for n, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1)}


class PBSBackend(SSHBackend):
    _mode: str | None = None  # the qstat flavour this server speaks, once known
    # Not from the recorded fixtures (no server was down then): the messages qsub gives when
    # it cannot reach the server, or the queue is full for now.
    transient_submit_errors = (
        "cannot connect to server",
        "Connection refused",
        "Maximum number of jobs already in queue",
    )

    # -- scripts -----------------------------------------------------------------------

    def render_script(self, job: JobSpec) -> str:
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
        queue = self.settings.get("queue") or job.partition
        if queue:
            directives.append(("-q", _token("queue", queue)))
        account = self.settings.get("account")
        if account:
            directives.append(("-A", _token("account", account)))
        for flag, path in (("-o", job.output_file), ("-e", job.error_file)):
            if path:
                directives.append((flag, _directive_value(flag, pbs_path(path, job.working_dir))))
        lines = [shebang(bool(self.settings.get("login_shell")))]
        lines += [f"#PBS {flag} {value}" for flag, value in directives]
        lines.append(f"# scripthut-tag: {job.tag}")
        # qsub reads #PBS lines up to the first command: end the header here, so that no
        # later line (a task id with a newline in the body's first comment) adds one.
        lines.append("true  # end of the #PBS directives")
        return "\n".join(lines) + "\n" + script_body(job)

    def submit_argv(self, job: JobSpec) -> list[str]:
        # No script operand: the batch's qsub function adds the script (QSUB_HELPERS). The
        # command line repeats -N/-o/-e (it wins over the directives) and carries the tag
        # for find_submitted.
        argv = ["qsub", "-N", safe_job_name(job.name)]
        if job.output_file:
            argv += ["-o", pbs_path(job.output_file, job.working_dir)]
        if job.error_file:
            argv += ["-e", pbs_path(job.error_file, job.working_dir)]
        return [*argv, "-v", f"{TAG_VARIABLE}={job.tag}"]

    def dependency_args(self, job_ids_word: str) -> str:
        return f"-W depend=afterok:{job_ids_word}"

    def parse_job_id(self, output: str) -> str:
        return parse_qsub(output)

    def submit_script(self, jobs: Sequence[tuple[JobSpec, str]]) -> str:
        # qsub resolves relative -o/-e paths against its working directory: pin it to
        # $HOME, which is what pbs_path() makes them relative to. Still one round trip:
        # the scripts go to temp files inside the batch (QSUB_HELPERS).
        return 'cd "$HOME" || exit 1\n' + QSUB_HELPERS + super().submit_script(jobs)

    # -- polling -----------------------------------------------------------------------

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        ids = list(dict.fromkeys(job_ids))

        def commands(mode: str) -> list[str]:
            history = HISTORY_COMMAND[mode]
            return [LIVE_COMMAND[mode], *(_with_ids(history, chunk) for chunk in _chunks(ids) if history)]

        mode, listings = self._qstat(commands)
        live = listings[0]
        history: dict[str, JobStatus] = {}
        for listing in listings[1:]:
            history.update(listing)
        found = _by_id(history, live)
        statuses: dict[str, JobStatus] = {}
        for job_id in ids:
            status = found.get(job_id) or found.get(_short_id(job_id))
            if status is None:
                reason = "not in qstat output" if mode != "plain" else "gone from qstat (finished jobs not shown)"
                status = JobStatus(job_id, JobState.UNKNOWN, reason=reason)
            statuses[job_id] = status if status.job_id == job_id else replace(status, job_id=job_id)
        observed = [s for s in live.values() if s.state in (JobState.QUEUED, JobState.RUNNING)]
        return PollResult(statuses=statuses, observed=observed)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        wanted = set(tags)
        if not wanted:
            return {}
        # Everything the server remembers, finished jobs included: rare (crash recovery).
        mode, (jobs,) = self._qstat(lambda mode: [HISTORY_COMMAND[mode] or LIVE_COMMAND[mode]], under_submit_lock=True)
        found: dict[str, str] = {}
        for job_id, status in jobs.items():
            if status.tag in wanted:
                found.setdefault(status.tag, job_id)
        if not found and jobs and not any(status.tag for status in jobs.values()):
            # Slurm's qstat wrapper shows no Variable_List: no tag can be seen, not ours
            # nor anyone's. The engine then queues these tasks again (a job that did reach
            # the scheduler may run twice); nothing better can be known from qstat here.
            log.warning(
                "%s: qstat (%s form) shows no job variables; %d interrupted submissions cannot be found by tag",
                self.name,
                mode,
                len(wanted),
            )
        return found

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return
        script = "\n".join(_with_ids("qdel", chunk) for chunk in _chunks(ids)) + "\n"
        result = self.transport.run_script(script, timeout=120)
        # Jobs that already finished or left the server are fine: they are not running.
        # Slurm's wrapper says nothing about those, and reports other errors on stdout.
        lines = result.stderr.splitlines() + [
            line for line in result.stdout.splitlines() if QDEL_STDOUT_ERROR.match(line)
        ]
        errors = [line for line in lines if line.strip() and not BENIGN.search(line)]
        if errors:
            raise BackendError(f"qdel failed: {' '.join(errors)[-500:]}")

    def cluster_info(self) -> ClusterInfo:
        clone_dir = self.settings.get("clone_dir") or "~/scripthut-repos"
        result = self.transport.run(
            # Slurm's pbsnodes wrapper has no -v (its -a prints the same shape, Torque-like).
            'n=$(pbsnodes -av 2>/dev/null); [ -n "$n" ] || n=$(pbsnodes -a 2>/dev/null); printf \'%s\\n\' "$n"; '
            "echo '--qstat-B--'; qstat -Bf 2>/dev/null; echo '--du--'; "
            f"du -sk {shell_path(clone_dir)} 2>/dev/null",
            timeout=60,
        )
        nodes, _, rest = result.stdout.partition("--qstat-B--")
        server, _, du = rest.partition("--du--")
        summary = parse_pbsnodes(nodes)
        info: dict[str, object] = dict(summary)
        # PBS keeps finished jobs for qstat -x only with job history on (off by default).
        info["job_history"] = bool(re.search(r"^\s*job_history_enable = True", server, re.MULTILINE))
        info["partitions"] = [
            {
                "partition": self.settings.get("queue") or "all nodes",
                "default": True,
                "available": "up" if summary["nodes_total"] > summary["nodes_down"] else "down",
                "nodes": summary["nodes_total"],
                "state": f"{summary['nodes_free']} free, {summary['nodes_down']} down",
                "cpus_allocated": summary["cpus_allocated"],
                "cpus_idle": summary["cpus_free"],
                "cpus_other": summary["cpus_total"] - summary["cpus_allocated"] - summary["cpus_free"],
                "cpus_total": summary["cpus_total"],
            }
        ]
        size = du.split()
        if size and size[0].isdigit():
            info["clone_dir"] = clone_dir
            info["clone_dir_mb"] = round(int(size[0]) / 1024, 1)
        return ClusterInfo.from_json(info)

    # -- helpers -----------------------------------------------------------------------

    def _qstat(
        self, commands: Callable[[str], list[str]], *, under_submit_lock: bool = False
    ) -> tuple[str, list[dict[str, JobStatus]]]:
        """Run ``commands(mode)`` in one round trip, in the best qstat flavour the server
        speaks (found out on the first call, then remembered); the jobs each one listed.
        ``under_submit_lock``: first wait for any submit batch still running (reconciling)."""
        start = MODES.index(self._mode) if self._mode else 0
        for mode in MODES[start:]:
            wanted = commands(mode)
            script = "".join(f"{command}\nprintf '\\n{RC_MARK} %s\\n' \"$?\"\n" for command in wanted)
            timeout = 180
            if under_submit_lock:
                script, timeout = HOLD_SUBMIT_LOCK + script, timeout + SUBMIT_LOCK_WAIT_SECONDS
            result = self.transport.run_script(script, timeout=timeout)
            self.check_submit_lock(result)
            outputs, codes = _split_outputs(result.stdout, len(wanted))
            if mode != MODES[-1] and _unsupported(mode, result.stderr, outputs):
                log.info("%s: qstat does not support the %s form; trying the next", self.name, mode)
                continue
            if len(codes) < len(wanted):
                raise BackendError(f"qstat did not finish (exit {result.exit_code}): {result.stderr.strip()[-500:]}")
            errors = [line for line in result.stderr.splitlines() if line.strip() and not BENIGN.search(line)]
            if any(codes) and errors:
                raise BackendError(f"qstat failed: {' '.join(errors)[-500:]}")
            parse = parse_qstat_json if mode == "json" else parse_qstat_text
            try:
                listings = [parse(output) for output in outputs]
            except ValueError as exc:
                log.warning("%s: unreadable qstat JSON (%s); using the text form", self.name, exc)
                continue
            self._mode = mode
            return mode, listings
        raise BackendError("qstat failed in every form (-F json, -x, plain)")


# -- rendering helpers ------------------------------------------------------------------


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


def parse_qsub(output: str) -> str:
    """The job id qsub printed: ``2.vm``, ``9[].vm`` (fixtures ``*.qsub.txt``), or a plain
    number from Slurm's qsub wrapper (``2042``, its sbatch's last word)."""
    lines = output.strip().splitlines()
    return lines[-1].strip().split()[-1] if lines and lines[-1].strip() else ""


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


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IDS_PER_COMMAND):
        yield items[start : start + IDS_PER_COMMAND]


def _with_ids(command: str, ids: Sequence[str]) -> str:
    return command + "".join(" " + shlex.quote(i) for i in ids)


def _split_outputs(stdout: str, count: int) -> tuple[list[str], list[int]]:
    """Each command's stdout and exit code, from the ``RC_MARK`` lines after each one."""
    parts = stdout.split(f"\n{RC_MARK} ")
    outputs, codes = [parts[0]], []
    for part in parts[1:]:
        code, _, rest = part.partition("\n")
        codes.append(int(code) if code.strip().lstrip("-").isdigit() else 1)
        outputs.append(rest)
    outputs = outputs[:count] + [""] * (count - len(outputs[:count]))
    return outputs, codes


def _unsupported(mode: str, stderr: str, outputs: Sequence[str]) -> bool:
    if UNSUPPORTED_OPTION.search(stderr):
        return True
    # Torque's -x means XML.
    return mode == "text" and any(o.lstrip().startswith("<") for o in outputs)


def _short_id(job_id: str) -> str:
    return job_id.split(".", 1)[0]


def _by_id(*listings: Mapping[str, JobStatus]) -> dict[str, JobStatus]:
    """Jobs by full and by short id (``12.server`` vs ``12.server.domain``), earlier listings first."""
    found: dict[str, JobStatus] = {}
    for listing in listings:
        for job_id, status in listing.items():
            found.setdefault(job_id, status)
            found.setdefault(_short_id(job_id), status)
    return found


# -- parsing (plain functions, fast: a poll may carry tens of thousands of lines) -------


def parse_qstat_json(text: str) -> dict[str, JobStatus]:
    """``qstat -f [-x] -F json`` (one or more documents, as several qstat calls print them)."""
    jobs: dict[str, JobStatus] = {}
    for document in _json_documents(text):
        for job_id, attrs in (document.get("Jobs") or {}).items():
            variables = attrs.get("Variable_List")
            tag = variables.get(TAG_VARIABLE, "") if isinstance(variables, dict) else ""
            for group in ("Resource_List", "resources_used"):
                nested = attrs.get(group)
                if isinstance(nested, dict):
                    for key, value in nested.items():
                        attrs[f"{group}.{key}"] = value
            jobs[job_id] = _job_status(job_id, attrs, str(tag), wrapper=False)
    return jobs


def parse_qstat_text(text: str) -> dict[str, JobStatus]:
    """``qstat -f [-x]`` text: OpenPBS/PBS Pro/Torque, and Slurm's ``qstat`` wrapper.

    ``Job Id: <id>`` then ``    key = value`` lines; a value longer than the line
    continues on lines starting with a TAB, broken anywhere (even inside a word), so
    continuations are joined as they are. Slurm's wrapper prints ``Job Id:\\t<id>`` and
    TAB-indented attributes that never continue.
    """
    jobs: dict[str, JobStatus] = {}
    job_id = ""
    attrs: dict[str, Any] = {}
    key = ""
    wrapper = False
    for line in text.split("\n"):
        if not line:
            continue
        first = line[0]
        if first == "\t" and not wrapper:
            if key:
                attrs[key] += line[1:]
            continue
        if first == " " or first == "\t":
            if job_id:
                # Only the indent goes: a trailing space may be part of a wrapped value.
                name, sep, value = line.lstrip(" \t").partition(" = ")
                if not sep and name.rstrip().endswith(" ="):
                    name, value = name.rstrip()[:-2], ""
                key = name
                attrs[key] = value
            continue
        if line.startswith("Job Id:"):
            if job_id:
                jobs[job_id] = _job_status(job_id, attrs, _variable(attrs, TAG_VARIABLE), wrapper)
            wrapper = line[7:8] == "\t"
            job_id, attrs, key = line[7:].strip(), {}, ""
    if job_id:
        jobs[job_id] = _job_status(job_id, attrs, _variable(attrs, TAG_VARIABLE), wrapper)
    return jobs


def parse_pbsnodes(text: str) -> dict[str, int]:
    """``pbsnodes -av`` (or ``-a``): node and CPU counts.

    ``nodes_free`` are nodes PBS calls ``free`` (accepting jobs, possibly partly used);
    ``cpus_free`` are unassigned CPUs on nodes that are up. Torque's ``np`` and ``jobs``
    stand in for ``resources_available.ncpus`` and ``resources_assigned.ncpus``.
    """
    summary = dict(nodes_total=0, nodes_free=0, nodes_down=0, cpus_total=0, cpus_allocated=0, cpus_free=0)
    for node in _node_blocks(text):
        states = {s.strip() for s in node.get("state", "").split(",")}
        total = _int(node.get("resources_available.ncpus") or node.get("np") or node.get("pcpus")) or 0
        assigned = _int(node.get("resources_assigned.ncpus"))
        if assigned is None:
            assigned = _torque_cpus_in_use(node.get("jobs", ""))
        summary["nodes_total"] += 1
        summary["cpus_total"] += total
        summary["cpus_allocated"] += min(assigned, total)
        if states & DEAD_NODE_STATES:
            summary["nodes_down"] += 1
            continue
        if "free" in states:
            summary["nodes_free"] += 1
        summary["cpus_free"] += max(0, total - assigned)
    return summary


def _node_blocks(text: str) -> Iterator[dict[str, str]]:
    node: dict[str, str] | None = None
    for line in text.split("\n"):
        if not line.strip():
            continue
        if line[0] not in " \t":
            if node is not None:
                yield node
            node = {"name": line.strip()}
        elif node is not None:
            key, _, value = line.strip().partition(" = ")
            node[key] = value
    if node is not None:
        yield node


def _torque_cpus_in_use(jobs: str) -> int:
    """Torque's ``jobs = 0/12.srv, 1-3/13.srv``: one CPU per index, ranges counted."""
    count = 0
    for entry in jobs.split(","):
        cpus, _, job = entry.strip().partition("/")
        if not job:
            continue
        low, _, high = cpus.partition("-")
        count += int(high) - int(low) + 1 if low.isdigit() and high.isdigit() else 1
    return count


def _json_documents(text: str) -> list[dict[str, Any]]:
    """Every JSON document in ``text``, repairing what OpenPBS 23.06 gets wrong."""
    try:
        return _decode_all(text)
    except ValueError:
        # Unescaped backslashes (21-json-edge: ``C:\temp``) and all-digit values with a
        # leading zero, which PBS prints as bare numbers.
        repaired = re.sub(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])?', lambda m: m.group(0) if m.group(1) else r"\\", text)
        repaired = re.sub(r'(":)(-?0\d+)(?=\s*[,}\n])', r'\1"\2"', repaired)
        return _decode_all(repaired)


def _decode_all(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder(strict=False)  # strict=False: raw control characters in values
    documents: list[dict[str, Any]] = []
    position, end = 0, len(text)
    while True:
        while position < end and text[position] in " \t\r\n":
            position += 1
        if position >= end:
            return documents
        document, position = decoder.raw_decode(text, position)
        if isinstance(document, dict):
            documents.append(document)


def _variable(attrs: Mapping[str, Any], name: str) -> str:
    """One variable of a text ``Variable_List`` (``A=1,B=2``; values escape commas as ``\\,``)."""
    variables = attrs.get("Variable_List") or ""
    start = variables.find(name + "=")
    while start > 0 and variables[start - 1] != ",":
        start = variables.find(name + "=", start + 1)
    if start < 0:
        return ""
    start += len(name) + 1
    end = variables.find(",", start)
    return variables[start:] if end < 0 else variables[start:end]


def _job_status(job_id: str, attrs: Mapping[str, Any], tag: str, wrapper: bool) -> JobStatus:
    letter = _text(attrs.get("job_state"))
    cpus = _int(attrs.get("Resource_List.ncpus"))
    state, reason, exit_code = _classify(letter, attrs, wrapper)
    owner = _text(attrs.get("Job_Owner"))
    status = JobStatus(
        job_id=job_id,
        state=state,
        exit_code=exit_code,
        reason=reason,
        name=_text(attrs.get("Job_Name")),
        user=owner.partition("@")[0],
        partition=_text(attrs.get("queue")),
        cpus=cpus,
        node=_hosts(_text(attrs.get("exec_host"))),
        tag=tag,
        # Slurm's wrapper prints the start time as mtime and the end time as ctime.
        submitted_at=_time(_text(attrs.get("qtime") or ("" if wrapper else attrs.get("ctime")))),
    )
    if state != JobState.QUEUED:
        status.started_at = _time(_text(attrs.get("mtime" if wrapper else "stime") or attrs.get("start_time")))
    if state.is_final:
        finished = attrs.get("ctime") if wrapper else attrs.get("obittime") or attrs.get("comp_time")
        status.finished_at = _time(_text(finished or attrs.get("mtime")))
    status.elapsed_seconds = clock_seconds(_text(attrs.get("resources_used.walltime")))
    used = clock_seconds(_text(attrs.get("resources_used.cput")))
    used_cpus = _int(attrs.get("resources_used.ncpus")) or cpus
    if status.elapsed_seconds and used is not None and used_cpus:
        status.cpu_efficiency = min(1.0, used / (status.elapsed_seconds * used_cpus))
    status.max_rss_mb = size_mb(_text(attrs.get("resources_used.mem")))
    status.requested_mem_mb = size_mb(_text(attrs.get("Resource_List.mem")))
    return status


def _classify(letter: str, attrs: Mapping[str, Any], wrapper: bool) -> tuple[JobState, str, int | None]:
    """(state, reason, exit code) from ``job_state``, ``substate``, ``Exit_status`` and ``comment``."""
    if wrapper and letter in ("C", "U"):
        # Slurm's qstat wrapper: C is any end (completed, failed, cancelled, timeout) and
        # U unknown, without an exit status; left to the engine's grace period.
        return JobState.UNKNOWN, "finished; this qstat does not report the outcome", None
    comment = _text(attrs.get("comment"))
    if letter == "Q":
        return JobState.QUEUED, comment or "queued", None
    if letter == "H":
        depend = _text(attrs.get("depend"))
        if depend and _text(attrs.get("substate")) in ("22", ""):
            return JobState.QUEUED, f"waiting for dependency {depend}", None
        holds = ", ".join(HOLDS.get(h, h) for h in _text(attrs.get("Hold_Types")) if h != "n")
        return JobState.QUEUED, comment or f"held ({holds or 'hold'})", None
    if letter == "W":
        start = _text(attrs.get("Execution_Time"))
        return JobState.QUEUED, f"waiting until {start}" if start else comment or "waiting", None
    if letter in ("T", "M"):
        return JobState.QUEUED, "moving between servers", None
    if letter in ("R", "E", "B"):
        return JobState.RUNNING, "exiting" if letter == "E" else "", None
    if letter in ("S", "U"):
        return JobState.RUNNING, "suspended", None
    if letter in ("F", "X", "C"):
        return _finished(attrs, comment)
    return JobState.UNKNOWN, f"unknown PBS job state {letter!r}" if letter else "no job state", None


def _finished(attrs: Mapping[str, Any], comment: str) -> tuple[JobState, str, int | None]:
    torque = "exit_status" in attrs
    raw = attrs.get("exit_status") if torque else attrs.get("Exit_status")
    substate = _text(attrs.get("substate"))
    # "Job run at ... on (...) and terminated by researcher@vm": keep what follows "and".
    outcome = comment.rpartition(") and ")[2] if ") and " in comment else comment
    if raw is None or _text(raw) == "":
        depend = _text(attrs.get("depend"))
        if substate != "91" and depend:
            # The server deletes a job whose afterok parent failed or does not exist (06-chain-B, 14).
            return JobState.CANCELLED, f"deleted by PBS: dependency {depend} can never be satisfied", None
        return JobState.CANCELLED, outcome or "deleted before it ran", None
    code = _int(raw)
    if code is None:
        return JobState.FAILED, f"unreadable exit status {raw!r}", None
    if code >= 256:
        signal = code - 256
        name = SIGNALS.get(signal, f"signal {signal}")
        if substate == "91" or "terminated" in outcome or (torque and signal == 15):
            return JobState.CANCELLED, f"{outcome or 'deleted'} ({name})", 128 + signal
        return JobState.FAILED, f"killed by {name}", 128 + signal
    if substate == "91":
        return JobState.CANCELLED, outcome or "deleted", code
    if code < 0:
        exceeded = re.search(r"exceeded resource (\w+)", comment)
        if exceeded:
            return JobState.FAILED, f"{exceeded.group(1)} exceeded", code
        codes = TORQUE_EXEC_CODES if torque else OPENPBS_EXEC_CODES
        return JobState.FAILED, codes.get(code, f"PBS ended the job (Exit_status {code})"), code
    if code:
        return JobState.FAILED, f"exit code {code}", code
    if substate == "93":
        # An array parent whose subjob failed: Exit_status 0, substate 93 (07b).
        return JobState.FAILED, outcome or "failed", code
    return JobState.COMPLETED, "", code


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    text = _text(value)
    try:
        return int(text)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _hosts(exec_host: str) -> str:
    """``vm/3+vm/4+vm/5*2`` -> ``vm``: the distinct hosts, in order."""
    if not exec_host:
        return ""
    hosts = dict.fromkeys(chunk.partition("/")[0] for chunk in exec_host.split("+"))
    return ",".join(h for h in hosts if h)


@lru_cache(maxsize=65536)
def _time(text: str) -> datetime | None:
    """``Wed Nov 25 12:22:59 2026`` (qstat prints the login's local time, read in the
    portal's zone, as for Slurm) or seconds since the epoch. Cached: listings repeat times."""
    if not text:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text), tz=UTC)
    parts = text.split()
    if len(parts) != 5 or parts[1] not in MONTHS:
        return None
    try:
        hour, minute, second = (int(p) for p in parts[3].split(":"))
        return datetime(
            int(parts[4]),
            MONTHS[parts[1]],
            int(parts[2]),
            hour,
            minute,
            second,
            tzinfo=timezone.get_default_timezone(),
        )
    except ValueError:
        return None
