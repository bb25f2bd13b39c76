"""Reading a ``per_user`` account's job files as that account.

A portal running as root reads every job's runner files itself (:mod:`.jobfiles`). An
unprivileged portal cannot open an account's 0700 work root: it reads job state, logs and
generated files by running small read-only commands as the account (through the root
helper, :mod:`.runas`), and checks what they found as it would have itself.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from backends.base import BackendError, FileRefused, safe_filename
from backends.local.confine import Confinement
from backends.local.jobfiles import MAX_STATE_BYTES, JobFiles

# Runs argv as the jobs' account (LocalAdapter._run_as_account).
Run = Callable[[list[str]], subprocess.CompletedProcess[bytes]]


class JobSnapshot(JobFiles):
    """The same files, as read by the job's own account (:data:`SNAPSHOT`): an
    unprivileged portal cannot open a ``per_user`` account's 0700 job directory itself."""

    def __init__(self, files: dict[str, str] | None) -> None:
        super().__init__(Path("/"), "")
        self.files = files

    def __enter__(self) -> JobSnapshot:
        return self

    @property
    def present(self) -> bool:
        return self.files is not None

    def exists(self, name: str) -> bool:
        return self.files is not None and name in self.files

    def read(self, name: str) -> str:
        return (self.files or {}).get(name, "").strip()


# Run as the jobs' account with the job directories as arguments: what JobSnapshot.parse reads.
STATE_FILES = "name pid group started finished exit_code cancelled claim reason"
SNAPSHOT = rf"""
for dir; do
    [ -d "$dir" ] && [ ! -L "$dir" ] || continue
    printf 'J:%s\0' "${{dir##*/}}"
    for f in {STATE_FILES}; do
        if [ -f "$dir/$f" ] && [ ! -L "$dir/$f" ]; then
            printf 'F:%s\0' "$f"; head -c {MAX_STATE_BYTES} -- "$dir/$f" | tr -d '\0'; printf '\0'
        elif [ -e "$dir/$f" ]; then printf 'F:%s\0\0' "$f"; fi
    done
done
"""


def snapshots(run: Run, jobs_dir: Path, tags: Sequence[str]) -> dict[str, JobFiles]:
    """The runner files of the jobs ``tags`` in ``jobs_dir``, read by :data:`SNAPSHOT` as the account."""
    if not tags:
        return {}
    proc = run(["bash", "-c", SNAPSHOT, "snapshot", *(str(jobs_dir / safe_filename(tag)) for tag in tags)])
    if proc.returncode != 0:
        raise BackendError(f"cannot read the jobs in {jobs_dir}: {proc.stderr.decode(errors='replace').strip()}")
    return dict(parse_snapshot(proc.stdout, list(tags)))


def parse_snapshot(output: bytes, tags: list[str]) -> dict[str, JobSnapshot]:
    """:data:`SNAPSHOT`'s output: a snapshot per tag (absent jobs: not present)."""
    found: dict[str, dict[str, str]] = {}
    tokens = iter(output.split(b"\0"))
    current: dict[str, str] | None = None
    for token in tokens:
        text = token.decode("utf-8", errors="replace")
        if text.startswith("J:"):
            current = found.setdefault(text[2:], {})
        elif text.startswith("F:") and current is not None:
            current[text[2:]] = next(tokens, b"").decode("utf-8", errors="replace")
    return {tag: JobSnapshot(found.get(tag)) for tag in tags}


# Run as the account with (path, max bytes): the resolved path, a NUL, then the file's tail.
READ = r"""
real=$(realpath -e -- "$1") || exit 2
[ -f "$real" ] || { echo "$real is not a regular file" >&2; exit 1; }
printf '%s\0' "$real"
exec tail -c "$2" -- "$real"
"""


def read_as_account(run: Run, path: str, max_bytes: int, confinement: Confinement) -> str:
    """The tail of ``path`` read by :data:`READ` as the account; FileNotFoundError, or
    FileRefused if it is not a regular file or not inside ``confinement``."""
    proc = run(["bash", "-c", READ, "read", path, str(max_bytes)])
    problem = proc.stderr.decode("utf-8", errors="replace").strip()
    if proc.returncode == 2:
        raise FileNotFoundError(f"{path}: {problem}")
    if proc.returncode != 0:
        raise FileRefused(f"{path} cannot be read: {problem}")
    real, _, data = proc.stdout.partition(b"\0")
    confinement.check(real.decode("utf-8", errors="replace"))
    return data.decode("utf-8", errors="replace")
