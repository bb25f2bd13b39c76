"""Configured workflows: run their command on the backend and turn its stdout into a run."""

from __future__ import annotations

from django.contrib.auth.models import User

from backends.base import BackendError, BackendUnavailable
from backends.identity import adapter_as
from backends.registry import has_shell, shell_access
from runs.actions import GitCheckout, create_run, require_identity
from runs.models import Run, Workflow
from runs.workflows.parse import ResolvedTask, WorkflowError, validate
from sources.git import GitError, checkout, git_ssh_env, resolve_branch


def fetch_tasks(workflow: Workflow, owner: User | None = None) -> tuple[str, GitCheckout | None]:
    """Run the workflow's command (in a verified git checkout if it has a git block); as
    ``owner`` on a per_user backend. The checkout is made by the account that clones
    (``sources.git.cloning_shell``: on ``local`` the portal's, never a task's; on a
    per_user SSH backend the owner's own, in their own ``clone_dir``)."""
    git: GitCheckout | None = None
    cwd = None
    if not has_shell(workflow.backend.kind):
        raise WorkflowError(
            f"workflow {workflow.name!r}: backend {workflow.backend.name!r} ({workflow.backend.kind}) has no shell "
            "to run the workflow's command in (its jobs run in containers); use a git source with workflow files"
        )
    try:
        adapter = adapter_as(workflow.backend, owner.pk if owner else None)
        if workflow.git:
            repo = workflow.git["repo"]
            branch = workflow.git.get("branch") or "main"
            parent = workflow.git.get("clone_dir") or "~/scripthut-repos"
            with git_ssh_env(adapter, workflow.git.get("deploy_key")) as ssh:
                sha = resolve_branch(adapter, repo, branch, ssh)
                cwd = checkout(adapter, repo, branch, sha, parent, ssh)
            git = GitCheckout(repo=repo, branch=branch, sha=sha, clone_dir=cwd)
        result = shell_access(adapter).run_command(workflow.command, cwd=cwd)
    except (GitError, BackendUnavailable, BackendError) as exc:
        raise WorkflowError(f"workflow {workflow.name!r}: {exc}") from exc
    if result.exit_code != 0:
        detail = result.stderr.strip()[-1000:] or result.stdout.strip()[-1000:]
        raise WorkflowError(f"workflow {workflow.name!r}: command exited with {result.exit_code}: {detail}")
    return result.stdout, git


def dry_run(workflow: Workflow) -> tuple[list[ResolvedTask], GitCheckout | None]:
    """The tasks a run of this workflow would have, validated, without creating anything,
    and the git checkout they would run in (if the workflow has a git block)."""
    text, git = fetch_tasks(workflow)
    return validate(text), git


def start_run(workflow: Workflow, owner: User, max_concurrent: int | None = None) -> Run:
    require_identity(workflow.backend, owner)  # before the command runs, not after
    text, git = fetch_tasks(workflow, owner)
    return create_run(
        owner=owner,
        backend=workflow.backend,
        payload=text,
        workflow_name=workflow.name,
        max_concurrent=max_concurrent or workflow.max_concurrent,
        workflow=workflow,
        git=git,
    )
