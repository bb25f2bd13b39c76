"""Reading PBS's output: ``qstat -f`` (text and ``-F json``), ``pbsnodes`` and qsub.

Shaped by the recorded OpenPBS 23.06 output in ``backends/pbs/fixtures/`` (see its
README), and by what Torque and Slurm's ``qstat`` wrapper print:

- Outcomes. ``job_state`` F (``X`` for an array subjob, Torque's C) is final and read
  with ``substate`` and ``Exit_status``: 92 finished / 93 failed / 91 deleted;
  Exit_status -29 is a walltime kill, 256+N a kill by signal N (qdel: 271), and a job
  deleted before it ran, also by a dependency that can never be met, has none.
- Slurm's wrapper shows no ``Variable_List`` and no exit status (``C`` is any end).

Plain functions, fast: a poll may carry tens of thousands of lines. Every status they
return has its flags set by :func:`backends.status.settle_flags`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.utils import timezone

from backends.base import JobState, JobStatus
from backends.status import settle_flags
from backends.units import clock_seconds, size_mb

TAG_VARIABLE = "SCRIPTHUT_TAG"  # the job variable (qsub -v) that carries a job's tag

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


def parse_qsub(output: str) -> str:
    """The job id qsub printed: ``2.vm``, ``9[].vm`` (fixtures ``*.qsub.txt``), or a plain
    number from Slurm's qsub wrapper (``2042``, its sbatch's last word)."""
    lines = output.strip().splitlines()
    return lines[-1].strip().split()[-1] if lines and lines[-1].strip() else ""


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
    return settle_flags(status)


# job_state letters of live jobs whose reason needs no other attribute.
LIVE_STATES = {
    "T": (JobState.QUEUED, "moving between servers"),
    "M": (JobState.QUEUED, "moving between servers"),
    "R": (JobState.RUNNING, ""),
    "B": (JobState.RUNNING, ""),  # an array parent with subjobs running
    "E": (JobState.RUNNING, "exiting"),
    "S": (JobState.RUNNING, "suspended"),
    "U": (JobState.RUNNING, "suspended"),
}


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
        return JobState.QUEUED, _held(attrs, comment), None
    if letter == "W":
        start = _text(attrs.get("Execution_Time"))
        return JobState.QUEUED, f"waiting until {start}" if start else comment or "waiting", None
    if letter in LIVE_STATES:
        state, reason = LIVE_STATES[letter]
        return state, reason, None
    if letter in ("F", "X", "C"):
        return _finished(attrs, comment)
    return JobState.UNKNOWN, f"unknown PBS job state {letter!r}" if letter else "no job state", None


def _held(attrs: Mapping[str, Any], comment: str) -> str:
    depend = _text(attrs.get("depend"))
    if depend and _text(attrs.get("substate")) in ("22", ""):
        return f"waiting for dependency {depend}"
    holds = ", ".join(HOLDS.get(h, h) for h in _text(attrs.get("Hold_Types")) if h != "n")
    return comment or f"held ({holds or 'hold'})"


def _finished(attrs: Mapping[str, Any], comment: str) -> tuple[JobState, str, int | None]:
    torque = "exit_status" in attrs
    raw = attrs.get("exit_status") if torque else attrs.get("Exit_status")
    substate = _text(attrs.get("substate"))
    # "Job run at ... on (...) and terminated by researcher@vm": keep what follows "and".
    outcome = comment.rpartition(") and ")[2] if ") and " in comment else comment
    if raw is None or _text(raw) == "":
        return JobState.CANCELLED, _deleted_before_it_ran(attrs, substate, outcome), None
    code = _int(raw)
    if code is None:
        return JobState.FAILED, f"unreadable exit status {raw!r}", None
    if code >= 256:
        return _killed_by_signal(code - 256, substate, outcome, torque)
    if substate == "91":
        return JobState.CANCELLED, outcome or "deleted", code
    if code < 0:
        return JobState.FAILED, _ended_by_pbs(code, comment, torque), code
    if code:
        return JobState.FAILED, f"exit code {code}", code
    if substate == "93":
        # An array parent whose subjob failed: Exit_status 0, substate 93 (07b).
        return JobState.FAILED, outcome or "failed", code
    return JobState.COMPLETED, "", code


def _deleted_before_it_ran(attrs: Mapping[str, Any], substate: str, outcome: str) -> str:
    depend = _text(attrs.get("depend"))
    if substate != "91" and depend:
        # The server deletes a job whose afterok parent failed or does not exist (06-chain-B, 14).
        return f"deleted by PBS: dependency {depend} can never be satisfied"
    return outcome or "deleted before it ran"


def _killed_by_signal(signal: int, substate: str, outcome: str, torque: bool) -> tuple[JobState, str, int]:
    """Exit status 256+N: deleted (qdel sends SIGTERM) or killed by signal N."""
    name = SIGNALS.get(signal, f"signal {signal}")
    if substate == "91" or "terminated" in outcome or (torque and signal == 15):
        return JobState.CANCELLED, f"{outcome or 'deleted'} ({name})", 128 + signal
    return JobState.FAILED, f"killed by {name}", 128 + signal


def _ended_by_pbs(code: int, comment: str, torque: bool) -> str:
    """Why PBS ended a job (Exit_status below zero)."""
    exceeded = re.search(r"exceeded resource (\w+)", comment)
    if exceeded:
        return f"{exceeded.group(1)} exceeded"
    codes = TORQUE_EXEC_CODES if torque else OPENPBS_EXEC_CODES
    return codes.get(code, f"PBS ended the job (Exit_status {code})")


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
