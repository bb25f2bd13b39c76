"""PBS (OpenPBS, PBS Professional, Torque) over SSH: qsub in batches, one qstat per poll.

How the recorded OpenPBS 23.06 output (``backends/pbs/fixtures/``) shapes this module
(the scripts and qsub arguments: :mod:`.rendering`; reading qstat: :mod:`.parsing`):

- Tags. Every job is submitted with ``-v SCRIPTHUT_TAG=<tag>``; PBS keeps it in the
  job's ``Variable_List``, which ``qstat -f`` shows, so an interrupted submit is found
  again by tag with one ``qstat -f -x`` listing.
- Polling. One remote call: ``qstat -f -F json`` (every live job: the dashboard's
  observed list) and ``qstat -f -x -F json <our ids>`` (our jobs, finished ones from
  the job history). Servers without ``-F json`` get the text form, servers without
  ``-x`` (Torque, where ``-x`` means XML, and Slurm's ``qstat`` wrapper) plain
  ``qstat -f``: detected once per adapter and remembered. There, a job that left
  qstat is UNKNOWN and the engine's grace period decides.
- Slurm's wrappers, as far as they go: job ids are plain numbers (``2042``); ``qstat
  -f`` shows no ``Variable_List`` (so ``find_submitted`` cannot find tags: an
  interrupted submit is queued again) and no exit status (``C`` is any end, so a
  finished job is UNKNOWN and the engine's grace period ends it as failed); ``qdel``
  reports errors on stdout; ``pbsnodes`` has no ``-v``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

from backends.base import BackendError, ClusterInfo, CommandResult, JobSpec, JobStatus, PartitionInfo, TaskLog
from backends.pbs.parsing import parse_pbsnodes, parse_qstat_json, parse_qstat_text, parse_qsub
from backends.pbs.rendering import QSUB_HELPERS, pbs_header, qsub_argv
from backends.ssh.scheduler import SshScheduler, chunks, with_ids

log = logging.getLogger("backends.pbs")

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


class PbsAdapter(SshScheduler):
    _mode: str | None = None  # the qstat flavour this server speaks, once known
    cancel_command = "qdel"
    cancel_benign = BENIGN
    # Not from the recorded fixtures (no server was down then): the messages qsub gives when
    # it cannot reach the server, or the queue is full for now.
    transient_submit_errors = (
        "cannot connect to server",
        "Connection refused",
        "Maximum number of jobs already in queue",
    )

    # -- scripts (see .rendering) ------------------------------------------------------

    def header(self, job: JobSpec) -> list[str]:
        queue = self.settings.get("queue") or job.partition
        # An array's elements carry the array's tag (its Variable_List has that one).
        tagged = replace(job, tag=job.array_tag) if job.array_tag else job
        return pbs_header(tagged, queue=queue, account=self.settings.get("account") or "")

    # -- arrays (OpenPBS, PBS Professional: qsub -J; fixtures 07-array.*) ---------------

    array_index_variable = "PBS_ARRAY_INDEX"

    def array_log_name(self, job: JobSpec) -> str:
        # PBS puts the element's index in place of ^array_index^; the array's tag keeps
        # the files of two arrays of one run apart.
        return f"{job.array_tag}.^array_index^"

    def array_args(self, count: int) -> list[str]:
        return ["-J", f"0-{count - 1}"]

    def element_job_id(self, array_job_id: str, index: int) -> str:
        return array_element_id(array_job_id, index)

    def element_id_shell(self, index: int) -> str:
        return f"${{_sh_last/\\[\\]/[{index}]}}"

    def array_job_id(self, job_id: str) -> str:
        return array_parent_id(job_id)

    def log_location(self, log: TaskLog) -> str:
        location = super().log_location(log)
        index = array_index(log.job_id)
        return location.replace("^array_index^", index) if index else location

    def submit_argv(self, job: JobSpec) -> list[str]:
        return qsub_argv(job)

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

    @property
    def not_found_reason(self) -> str:  # type: ignore[override]
        return "not in qstat output" if self._mode != "plain" else "gone from qstat (finished jobs not shown)"

    def query_jobs(self, job_ids: Sequence[str]) -> tuple[list[JobStatus], dict[str, JobStatus]]:
        def commands(mode: str) -> list[str]:
            history = HISTORY_COMMAND[mode]
            return [LIVE_COMMAND[mode], *(with_ids(history, chunk) for chunk in chunks(job_ids) if history)]

        _, listings = self._qstat(commands)
        live = listings[0]
        history: dict[str, JobStatus] = {}
        for listing in listings[1:]:
            history.update(listing)
        known = _by_id(history, live)
        found = {job_id: known.get(job_id) or known.get(_short_id(job_id)) for job_id in job_ids}
        return list(live.values()), {job_id: status for job_id, status in found.items() if status}

    def tagged_jobs(self) -> Iterator[tuple[str, str]]:
        # Everything the server remembers, finished jobs included: rare (crash recovery).
        mode, (jobs,) = self._qstat(lambda mode: [HISTORY_COMMAND[mode] or LIVE_COMMAND[mode]], under_submit_lock=True)
        if jobs and not any(status.tag for status in jobs.values()):
            # Slurm's qstat wrapper shows no Variable_List: no tag can be seen, not ours
            # nor anyone's. The engine then queues these tasks again (a job that did reach
            # the scheduler may run twice); nothing better can be known from qstat here.
            log.warning(
                "%s: qstat (%s form) shows no job variables; interrupted submissions cannot be found by tag",
                self.name,
                mode,
            )
        return ((job_id, status.tag) for job_id, status in jobs.items() if status.tag)

    def cancel_error_lines(self, result: CommandResult) -> list[str]:
        # Slurm's qdel wrapper says nothing about finished jobs, and reports other errors on stdout.
        stdout_errors = [line for line in result.stdout.splitlines() if QDEL_STDOUT_ERROR.match(line)]
        return result.stderr.splitlines() + stdout_errors

    def cluster_info(self) -> ClusterInfo:
        result = self.transport.run(
            # Slurm's pbsnodes wrapper has no -v (its -a prints the same shape, Torque-like).
            'n=$(pbsnodes -av 2>/dev/null); [ -n "$n" ] || n=$(pbsnodes -a 2>/dev/null); printf \'%s\\n\' "$n"; '
            f"echo '--qstat-B--'; qstat -Bf 2>/dev/null; echo '--du--'; {self.clone_dir_usage()}",
            timeout=60,
        )
        nodes, _, rest = result.stdout.partition("--qstat-B--")
        server, _, du = rest.partition("--du--")
        summary = parse_pbsnodes(nodes)
        # One row for the whole server: pbsnodes does not say which queue a node serves.
        partition = PartitionInfo(
            partition=self.settings.get("queue") or "all nodes",
            default=True,
            available="up" if summary["nodes_total"] > summary["nodes_down"] else "down",
            nodes=summary["nodes_total"],
            state=f"{summary['nodes_free']} free, {summary['nodes_down']} down",
            cpus_allocated=summary["cpus_allocated"],
            cpus_idle=summary["cpus_free"],
            cpus_other=max(0, summary["cpus_total"] - summary["cpus_allocated"] - summary["cpus_free"]),
            cpus_total=summary["cpus_total"],
        )
        # PBS keeps finished jobs for qstat -x only with job history on (off by default).
        job_history = bool(re.search(r"^\s*job_history_enable = True", server, re.MULTILINE))
        return self.with_clone_dir_usage(ClusterInfo(partitions=[partition], job_history=job_history), du)

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
            result = self._run_qstat(wanted, under_submit_lock)
            outputs, codes = _split_outputs(result.stdout, len(wanted))
            if mode != MODES[-1] and _unsupported(mode, result.stderr, outputs):
                log.info("%s: qstat does not support the %s form; trying the next", self.name, mode)
                continue
            _raise_for_errors(result, codes, len(wanted))
            parse = parse_qstat_json if mode == "json" else parse_qstat_text
            try:
                listings = [parse(output) for output in outputs]
            except ValueError as exc:
                log.warning("%s: unreadable qstat JSON (%s); using the text form", self.name, exc)
                continue
            self._mode = mode
            return mode, listings
        raise BackendError("qstat failed in every form (-F json, -x, plain)")

    def _run_qstat(self, commands: Sequence[str], under_submit_lock: bool) -> CommandResult:
        """The commands in one script, each followed by an ``RC_MARK`` line with its exit code."""
        script = "".join(f"{command}\nprintf '\\n{RC_MARK} %s\\n' \"$?\"\n" for command in commands)
        if under_submit_lock:
            return self.run_under_submit_lock(script, timeout=180)
        return self.transport.run_script(script, timeout=180)


ARRAY_INDEX = re.compile(r"\[(\d*)\]")


def array_element_id(array_job_id: str, index: int) -> str:
    """Subjob ``index`` of the array ``9[].vm``: ``9[3].vm`` (fixture 07-array)."""
    return ARRAY_INDEX.sub(f"[{index}]", array_job_id, count=1)


def array_parent_id(job_id: str) -> str:
    """The array job of a subjob: ``9[3].vm`` -> ``9[].vm``."""
    return ARRAY_INDEX.sub("[]", job_id, count=1)


def array_index(job_id: str) -> str:
    """A subjob's index (``9[3].vm`` -> ``3``); empty for any other job."""
    match = ARRAY_INDEX.search(job_id)
    return match.group(1) if match else ""


def _raise_for_errors(result: CommandResult, codes: Sequence[int], count: int) -> None:
    """BackendError if the qstat script did not run every command, or one failed for real."""
    if len(codes) < count:
        raise BackendError(f"qstat did not finish (exit {result.exit_code}): {result.stderr.strip()[-500:]}")
    errors = [line for line in result.stderr.splitlines() if line.strip() and not BENIGN.search(line)]
    if any(codes) and errors:
        raise BackendError(f"qstat failed: {' '.join(errors)[-500:]}")


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


Adapter = PbsAdapter
