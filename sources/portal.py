"""Git sources of a backend without a shell (AWS Batch): git runs on the portal host.

There is no filesystem on the backend to clone into, so the branch is resolved with
``git ls-remote`` and the repository cloned here, under ``sources_cache_dir`` (default
``<data_dir>/sources``), to list and read workflow files. Each job then clones the same
commit inside its container (see ``backends.batch.rendering``), with
``SCRIPTHUT_GIT_REPO/BRANCH/SHA`` set. git gets its arguments as a list (no shell),
after ``--``, so a URL or branch is never read as an option; a password or token in the
URL goes to git's credential helper through the environment (``sources.git.Remote``),
never on its command line or into the clone's ``.git/config``.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

from backends.base import safe_filename
from runs.models import PortalSettings
from sources.git import GitError, Remote, git_options
from sources.models import Source

GIT_TIMEOUT_SECONDS = 600


class PortalSourceError(RuntimeError):
    """The source cannot be used on a backend without a shell; the message says why."""


def cache_dir() -> Path:
    configured = PortalSettings.load().sources_cache_dir
    return Path(configured).expanduser() if configured else Path(settings.DATA_DIR) / "sources"


def checkout_path(source: Source, sha: str) -> Path:
    return cache_dir() / safe_filename(source.name) / sha


def _git(args: list[str], deploy_key: str = "", remote: Remote | None = None) -> str:
    env = {**os.environ, **(remote or Remote("")).env()}
    if deploy_key:
        key = str(Path(deploy_key).expanduser())
        env["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(key)} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    try:
        # An argument list: no shell.
        result = subprocess.run(  # noqa: S603
            ["git", *git_options(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT_SECONDS}s") from exc
    if result.returncode != 0:
        raise GitError(f"git {args[0]} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def sync(source: Source) -> tuple[str, Path]:
    """Resolve the branch and clone that commit on the portal host: (sha, checkout)."""
    if source.kind != Source.Kind.GIT:
        raise PortalSourceError(
            f"backend {source.backend.name!r} has no filesystem of its own: a path source cannot be read there; "
            "use a git source"
        )
    if source.postclone:
        raise PortalSourceError(f"postclone is not supported on backend {source.backend.name!r} (no shell)")
    if not source.url:
        raise PortalSourceError("git source has no url")
    remote = Remote.of(source.url)
    found = _git(["ls-remote", "--", remote.url, f"refs/heads/{source.branch}"], source.deploy_key, remote).split()
    if not found:
        raise GitError(f"branch {source.branch!r} not found in {source.url}")
    sha = found[0]
    target = checkout_path(source, sha)
    if not (target / ".git").is_dir():
        partial = target.with_name(f"{sha}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        clone = ["clone", "--quiet", "--branch", source.branch, "--", remote.url, str(partial)]
        _git(clone, source.deploy_key, remote)
        _git(["-C", str(partial), "checkout", "--quiet", sha])
        partial.rename(target)  # complete clones only under their final name
    return sha, target


def list_workflow_files(root: Path, pattern: str) -> list[str]:
    """Regular files under ``root`` matching the (already checked) glob, sorted."""
    names = glob.glob(pattern, root_dir=root, recursive=True)
    return sorted(os.path.normpath(n) for n in names if _inside(root, root / n) and (root / n).is_file())


def read_workflow(source: Source, file: str, max_bytes: int) -> str:
    """The first ``max_bytes`` of a workflow file of the synced checkout; never a file
    outside it (a symlink in the repository pointing elsewhere is refused)."""
    root = checkout_path(source, source.synced_sha)
    path = root / file
    if not _inside(root, path):
        raise PortalSourceError(f"{file} points outside the checkout of source {source.name!r}")
    if not path.is_file():
        raise FileNotFoundError(file)
    with path.open("rb") as handle:
        return handle.read(max_bytes).decode("utf-8", errors="replace")


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())
