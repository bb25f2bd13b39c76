"""Sources: sync a git checkout or backend path, list its workflow files, run one of them.

Every command runs on the source's backend through its adapter. Git work goes
through ``sources.git``; the only value that reaches the shell unquoted is the
``workflows_glob``, which is checked against a strict whitelist first.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import subprocess

from django.contrib.auth.models import User
from django.utils import timezone

from backends.base import BackendError, BackendUnavailable, ShellAccess
from backends.batch.rendering import CONTAINER_CHECKOUT
from backends.registry import get_adapter, has_shell, shell_access
from runs.actions import GitCheckout, create_run
from runs.models import Run
from runs.workflows.parse import ResolvedTask, WorkflowError, validate
from sources import portal
from sources.git import GitError, checkout, cloning_shell, git_ssh_env, resolve_branch
from sources.models import Source
from sources.portal import PortalSourceError

DEFAULT_GLOB = ".hut/workflows/*.json"
GLOB_CHARS = re.compile(r"[A-Za-z0-9._/*?\[\]-]+")
MAX_WORKFLOW_BYTES = 16 * 1024 * 1024

# What a sync turns into ``sync_error`` instead of raising (a local command timing out
# raises subprocess.TimeoutExpired, a remote one TimeoutError).
SYNC_ERRORS = (GitError, BackendUnavailable, BackendError, TimeoutError, subprocess.TimeoutExpired)


class SourceError(RuntimeError):
    """The source is misconfigured or its files cannot be listed."""


class UnknownWorkflowFile(WorkflowError):  # noqa: N818  (a WorkflowError, named for what was asked)
    """The file is not among the source's discovered workflow files."""


def check_glob(pattern: str) -> str:
    """The glob if it is safe to expand unquoted in the source root; SourceError otherwise."""
    if not pattern or not GLOB_CHARS.fullmatch(pattern):
        raise SourceError(f"workflows_glob {pattern!r} is not allowed: use only letters, digits and . _ - / * ? [ ]")
    if pattern.startswith("/"):
        raise SourceError(f"workflows_glob {pattern!r} must be relative to the source root")
    if ".." in pattern.split("/"):
        raise SourceError(f"workflows_glob {pattern!r} must not contain '..'")
    return pattern


def list_workflow_files(shell: ShellAccess, root: str, pattern: str) -> list[str]:
    """Regular files under ``root`` matching ``pattern``, as sorted relative paths (one command)."""
    check_glob(pattern)  # the one value that goes into the shell unquoted
    script = (
        f'shopt -s globstar nullglob\nfor f in {pattern}; do if [ -f "$f" ]; then printf \'%s\\0\' "$f"; fi; done\n'
    )
    # One simple command (not a list), so an adapter's `cd <cwd> && ...` guards all of it.
    result = shell.run_command(f"bash -c {shlex.quote(script)}", cwd=root, timeout=60)
    if result.exit_code != 0:
        detail = result.stderr.strip()[-500:] or f"exit code {result.exit_code}"
        raise SourceError(f"cannot list workflow files in {root}: {detail}")
    names = {posixpath.normpath(name) for name in result.stdout.split("\0") if name}
    return sorted(names)


def sync_source(source: Source) -> Source:
    """Check out the branch head (git) and refresh the workflow file list.

    Never raises for sync problems: they go to ``sync_error`` and the previous
    commit and file list stay, so the source keeps working from its last good sync.
    """
    now = timezone.now()
    try:
        # Checked before any git command, so a bad glob runs nothing at all.
        pattern = check_glob(source.workflows_glob or DEFAULT_GLOB)
        if has_shell(source.backend.kind):
            sha, checkout_dir, files = _sync_on_backend(source, pattern)
        else:
            sha, portal_checkout = portal.sync(source)
            checkout_dir, files = "", portal.list_workflow_files(portal_checkout, pattern)
    except (SourceError, PortalSourceError, *SYNC_ERRORS) as exc:
        source.synced_at = now
        source.sync_error = str(exc) or type(exc).__name__
        source.save(update_fields=["synced_at", "sync_error"])
        return source
    source.synced_at = now
    source.synced_sha = sha
    source.sync_error = ""
    source.workflow_files = files
    source.checkout_dir = checkout_dir
    source.save(update_fields=["synced_at", "synced_sha", "sync_error", "workflow_files", "checkout_dir"])
    return source


def _sync_on_backend(source: Source, pattern: str) -> tuple[str, str, list[str]]:
    """Check out (git) on the source's backend and list its workflow files there:
    (sha, the checkout, files); path sources have no sha and no checkout."""
    adapter = get_adapter(source.backend)
    if source.kind == Source.Kind.GIT:
        if not source.url:
            raise SourceError("git source has no url")
        with git_ssh_env(adapter, source.deploy_key) as ssh:
            sha = resolve_branch(adapter, source.url, source.branch, ssh)
            root = checkout(adapter, source.url, source.branch, sha, source.clone_dir, ssh, source.postclone)
        # The checkout is the cloning account's (on a per_user local backend: no task's).
        return sha, root, list_workflow_files(cloning_shell(adapter), root, pattern)
    if source.kind == Source.Kind.PATH:
        if not source.path:
            raise SourceError("path source has no path")
    else:
        raise SourceError(f"unknown source type {source.kind!r}")
    return "", "", list_workflow_files(shell_access(adapter), source.path, pattern)


def verify_checkout(source: Source) -> None:
    """Before a run or dry run reads the synced checkout: reuse it only if it is still
    exactly as cloned, else clone the same commit again (``sources.git.checkout``)."""
    if source.kind != Source.Kind.GIT or not source.synced_sha or not has_shell(source.backend.kind):
        return
    adapter = get_adapter(source.backend)
    try:
        with git_ssh_env(adapter, source.deploy_key) as ssh:
            root = checkout(
                adapter, source.url, source.branch, source.synced_sha, source.clone_dir, ssh, source.postclone
            )
    except SYNC_ERRORS as exc:
        raise WorkflowError(f"source {source.name!r}: {exc}") from exc
    if root != source.checkout_dir:
        source.checkout_dir = root
        source.save(update_fields=["checkout_dir"])


def _read_source_file(source: Source, path: str, file: str) -> str:
    """One byte over the limit tells a too-big file from one that just fits."""
    if not has_shell(source.backend.kind):
        return portal.read_workflow(source, file, MAX_WORKFLOW_BYTES + 1)
    adapter = get_adapter(source.backend)
    shell = cloning_shell(adapter) if source.kind == Source.Kind.GIT else shell_access(adapter)
    return shell.read_file(path, max_bytes=MAX_WORKFLOW_BYTES + 1)


def source_tasks(source: Source, file: str) -> str:
    """The text of one discovered workflow file, read through the backend adapter."""
    if file not in source.workflow_files:
        raise UnknownWorkflowFile(
            f"{file!r} is not a workflow file of source {source.name!r} (sync the source to refresh its list)"
        )
    if not source.root:
        raise WorkflowError(f"source {source.name!r} has not been synced")
    path = f"{source.root.rstrip('/')}/{file}"
    try:
        text = _read_source_file(source, path, file)
    except FileNotFoundError:
        raise WorkflowError(
            f"source {source.name!r}: {file} no longer exists in {source.root} (sync the source again)"
        ) from None
    except (PortalSourceError, *SYNC_ERRORS) as exc:
        raise WorkflowError(f"source {source.name!r}: {exc}") from exc
    if len(text.encode("utf-8")) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"source {source.name!r}: {file} is larger than {MAX_WORKFLOW_BYTES} bytes")
    return text


def dry_run_source(source: Source, file: str) -> list[ResolvedTask]:
    """The tasks a run of this workflow file would have, validated, without creating anything."""
    verify_checkout(source)
    return validate(source_tasks(source, file))


def source_git(source: Source) -> GitCheckout | None:
    """The synced checkout that a run's relative working dirs resolve in (git sources only)."""
    if source.kind != Source.Kind.GIT:
        return None
    # Without a shared filesystem each job clones the commit in its own container.
    clone_dir = source.root if has_shell(source.backend.kind) else CONTAINER_CHECKOUT
    return GitCheckout(repo=source.url, branch=source.branch, sha=source.synced_sha, clone_dir=clone_dir)


def start_source_run(source: Source, file: str, owner: User, max_concurrent: int | None = None) -> Run:
    verify_checkout(source)
    text = source_tasks(source, file)
    return create_run(
        owner=owner,
        backend=source.backend,
        payload=text,
        workflow_name=f"{source.name}/{file}",
        max_concurrent=max_concurrent,
        git=source_git(source),
    )
