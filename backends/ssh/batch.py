"""The submit batch of the SSH schedulers: the job script's frame and the one bash
script that submits a whole batch (see :mod:`backends.ssh.scheduler`).

Each job goes to the scheduler's submit command with its script on a quoted
here-document, and the batch prints ``SCRIPTHUT-OK <tag> <output>`` or
``SCRIPTHUT-ERR <tag> <message>`` for it. A job that waits on a job earlier in the
same batch refers to that job's id through a shell variable.

Job arrays: the elements of one array (jobs with the same ``array_tag``, shaped alike:
:meth:`SubmitBatch.array_shape`) go as one submit whose script dispatches on the
element's index to that element's own script body; one ``SCRIPTHUT-OK`` line answers
for them all, and each gets its own job id (:meth:`SubmitBatch.element_job_id`).
"""

from __future__ import annotations

import secrets
import shlex
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from backends.base import BackendAdapter, JobSpec
from backends.scripts import end_marker_lines, script_body, shebang, shell_path

# A submit batch holds this lock on the login node while it runs, and reconciling takes it
# before it lists jobs by tag. A batch that outlived its SSH session (a timeout, a dropped
# connection) may still be calling sbatch: reconciling waits for it to end instead of
# deciding that its jobs never reached the scheduler and submitting them again.
SUBMIT_LOCK_FILE = ".cache/scripthut/submit.lock"  # in the login's home
SUBMIT_LOCK_WAIT_SECONDS = 240
SUBMIT_LOCK_BUSY = 75  # exit status of a script that could not take the lock
HOLD_SUBMIT_LOCK = f"""
mkdir -p "$HOME/{PurePosixPath(SUBMIT_LOCK_FILE).parent}" || exit {SUBMIT_LOCK_BUSY}
exec 9>>"$HOME/{SUBMIT_LOCK_FILE}" || exit {SUBMIT_LOCK_BUSY}
if command -v flock >/dev/null && ! flock -w {SUBMIT_LOCK_WAIT_SECONDS} 9; then
    echo "an earlier ScriptHut submission is still running on this host" >&2
    exit {SUBMIT_LOCK_BUSY}
fi
"""

SUBMIT_HELPERS = r"""
set -u
_sh_last=
_sh_submit() {
    local tag=$1 out rc
    shift
    # fd 9 holds the submit lock: the submit command must not keep it after this script ends.
    out=$("$@" 2>&1 9>&-)
    rc=$?
    # Parameter expansion, not pipes: no extra processes per job.
    if [ "$rc" -eq 0 ]; then
        _sh_last=${out##*$'\n'}
        printf 'SCRIPTHUT-OK %s %s\n' "$tag" "$_sh_last"
    else
        _sh_last=
        printf 'SCRIPTHUT-ERR %s %s\n' "$tag" "${out//$'\n'/ }"
    fi
}
"""


class SubmitBatch(BackendAdapter):
    """Job scripts and submit batches for a scheduler reached through a shell."""

    @abstractmethod
    def header(self, job: JobSpec) -> list[str]:
        """The directive lines (``#SBATCH ...``, ``#PBS ...``) between the shebang and
        the shared script body; every value checked or quoted. ValueError if a value
        cannot be written safely."""

    @abstractmethod
    def submit_argv(self, job: JobSpec) -> list[str]:
        """The submit command (sbatch, qsub) for a job script read from stdin, unquoted."""

    @abstractmethod
    def dependency_args(self, job_ids_word: str) -> str:
        """Shell fragment adding an afterok dependency on ``job_ids_word`` (``:``-joined, shell-ready)."""

    # -- job arrays: what each scheduler defines (empty ``array_index_variable``: none) --

    # The variable that holds an array element's index in its job (SLURM_ARRAY_TASK_ID).
    array_index_variable = ""

    def array_args(self, count: int) -> list[str]:
        """Submit arguments making the job an array of ``count`` elements, indices 0..count-1."""
        raise NotImplementedError

    def element_job_id(self, array_job_id: str, index: int) -> str:
        """The job id of element ``index`` of the array job ``array_job_id``."""
        raise NotImplementedError

    def element_id_shell(self, index: int) -> str:
        """Shell expression for element ``index``'s job id, from the array's submit output in ``$_sh_last``."""
        raise NotImplementedError

    def render_script(self, job: JobSpec) -> str:
        lines = [shebang(bool(self.settings.get("login_shell"))), *self.header(job)]
        if self.read_ends_every:
            lines += end_marker_lines(job)
        return "\n".join(lines) + "\n" + script_body(job)

    def array_shape(self, job: JobSpec) -> Hashable | None:
        """The directives of the array the job would be in (its name and tag aside), and
        its environment's init; a job held on dependencies goes plain."""
        if not (self.array_index_variable and self.settings.get("arrays", True)):
            return None
        if job.after_job_ids or job.after_tags:
            return None
        try:
            directives = self.header(replace(self.as_array_element(job, "sh-a", 0), name="-"))
        except ValueError:
            return None
        return (tuple(directives), job.extra_init)

    def array_script(self, elements: Sequence[JobSpec]) -> str:
        """One script for an array job: the shared directives, then a dispatcher that runs
        the body of the element whose index the scheduler gives. Each body is read from
        a quoted here-document (so every value stays as quoted as in a plain job) and
        evaluated: a syntax error in one task's command fails that element only."""
        lines = [shebang(bool(self.settings.get("login_shell"))), *self.header(elements[0])]
        variable = self.array_index_variable
        lines.append(f'case "${{{variable}:-}}" in')
        for job in elements:
            body = script_body(job)
            marker = unique_marker(body)
            lines += [f"{job.array_index})", f"IFS= read -r -d '' _sh_task <<'{marker}'", body.rstrip("\n"), marker]
            if self.read_ends_every:  # each element leaves its own task's markers
                lines += ["    " + line for line in end_marker_lines(job)]
            lines += ['    eval "$_sh_task"', "    ;;"]
        lines += [f'*) echo "scripthut: no task for array index ${{{variable}:-}}" >&2; exit 1 ;;', "esac", ""]
        return "\n".join(lines)

    def submit_script(self, jobs: Sequence[tuple[JobSpec, str]]) -> str:
        lines = [HOLD_SUBMIT_LOCK, SUBMIT_HELPERS]
        absolute_dirs = sorted({d for job, _ in jobs for d in _log_dirs(job) if d.startswith(("/", "~"))})
        if absolute_dirs:
            lines.append("mkdir -p -- " + " ".join(shell_path(d) for d in absolute_dirs))
        index = {job.tag: n for n, (job, _) in enumerate(jobs)}
        done: set[str] = set()
        for n, (job, script) in enumerate(jobs):
            if job.array_tag:
                if job.array_tag not in done:
                    done.add(job.array_tag)
                    lines += self._array_lines(
                        [(m, j) for m, (j, _) in enumerate(jobs) if j.array_tag == job.array_tag]
                    )
                continue
            parents = [index[t] for t in job.after_tags if t in index]
            lines += self._submit_lines(job, script, parents)
            lines.append(f"jid_{n}=${{_sh_last%%;*}}")
        return "\n".join(lines) + "\n"

    def _array_lines(self, elements: Sequence[tuple[int, JobSpec]]) -> list[str]:
        """One array job for these elements (batch position, job); each position's
        ``jid_<n>`` is its element's job id, for dependents later in the batch."""
        first = elements[0][1]
        array = replace(first, tag=first.array_tag, after_job_ids=[], after_tags=[])
        argv = [*self.submit_argv(array), *self.array_args(len(elements))]
        lines = self._submit_lines(array, self.array_script([job for _, job in elements]), [], argv)
        return lines + [f"jid_{n}=${{_sh_last:+{self.element_id_shell(job.array_index)}}}" for n, job in elements]

    def _submit_lines(
        self, job: JobSpec, script: str, parents: Sequence[int], argv: Sequence[str] | None = None
    ) -> list[str]:
        """One job of the batch; ``parents``: the batch positions of jobs it waits on;
        ``argv``: the submit command, if not :meth:`submit_argv`'s."""
        lines = [
            # Relative log paths are relative to the job's working dir, as for the scheduler.
            f"(cd {shell_path(job.working_dir)} 2>/dev/null && mkdir -p -- {shlex.quote(directory)})"
            for directory in _log_dirs(job)
            if not directory.startswith(("/", "~"))
        ]
        argv = self.submit_argv(job) if argv is None else argv
        submit = f"_sh_submit {shlex.quote(job.tag)} " + " ".join(shlex.quote(a) for a in argv)
        if job.after_job_ids or parents:
            words = [shlex.quote(j) for j in job.after_job_ids] + [f'"${{jid_{p}}}"' for p in parents]
            submit += " " + self.dependency_args(":".join(words))
        marker = unique_marker(script)
        body = [f"{submit} <<'{marker}'", script.rstrip("\n"), marker]
        if not parents:
            return lines + body
        # A parent in this batch was not submitted: leave the child for a later batch.
        missing = " || ".join(f'[ -z "${{jid_{p}}}" ]' for p in parents)
        skip = f"_sh_last=; printf 'SCRIPTHUT-SKIP %s\\n' {shlex.quote(job.tag)}"
        return [*lines, f"if {missing}; then {skip}; else", *body, "fi"]


def unique_marker(text: str) -> str:
    """A here-document delimiter that does not occur in ``text``."""
    marker = "SCRIPTHUT_" + secrets.token_hex(8)
    while marker in text:
        marker = "SCRIPTHUT_" + secrets.token_hex(8)
    return marker


def _log_dirs(job: JobSpec) -> list[str]:
    return sorted({str(PurePosixPath(p).parent) for p in (job.output_file, job.error_file) if p})
