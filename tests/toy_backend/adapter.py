"""A toy scheduler: ``submit`` runs each job script to its end with bash, then
``poll`` reports how it ended. Each job's exit code is a file in ``job_dir``, named by
job id, beside a file holding its tag."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from backends.base import (
    BackendAdapter,
    FileLogs,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    resolve_in,
)
from backends.scripts import script_body, shebang


class ToyAdapter(FileLogs, BackendAdapter):
    @property
    def job_dir(self) -> Path:
        return Path(self.settings["job_dir"])

    def render_script(self, job: JobSpec) -> str:
        return shebang(False) + "\n" + script_body(job)

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for job, script in jobs:
            job_id = f"toy-{len(list(self.job_dir.glob('*.tag'))) + 1}"
            (self.job_dir / f"{job_id}.tag").write_text(job.tag)
            with (
                open(self.log_path(job.output_file, job), "w") as out,
                open(self.log_path(job.error_file, job), "w") as err,
            ):
                done = subprocess.run(["bash", "-s"], input=script, text=True, stdout=out, stderr=err, timeout=60)
            (self.job_dir / f"{job_id}.exit").write_text(str(done.returncode))
            results.append(SubmitResult(tag=job.tag, job_id=job_id))
        return results

    def log_path(self, path: str, job: JobSpec) -> Path:
        resolved = Path(resolve_in(path, job.working_dir)).expanduser()
        resolved.parent.mkdir(parents=True, exist_ok=True)
        return resolved

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        statuses = {}
        for job_id in job_ids:
            exit_file = self.job_dir / f"{job_id}.exit"
            if not exit_file.exists():
                statuses[job_id] = JobStatus(job_id, JobState.UNKNOWN)
                continue
            code = int(exit_file.read_text())
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            statuses[job_id] = JobStatus(job_id, state, exit_code=code)
        return PollResult(statuses=statuses)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        found = {path.read_text(): path.stem for path in self.job_dir.glob("*.tag")}
        return {tag: found[tag] for tag in tags if tag in found}

    def cancel(self, job_ids: Sequence[str]) -> None:
        return None  # every job has ended by the time submit returns

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        return Path(path).expanduser().read_text()[-max_bytes:]


Adapter = ToyAdapter
