"""Git checkouts on a backend: resolve a branch to a commit and clone it once.

All commands run through the backend adapter's ``run_command`` with every value
quoted. A deploy key is copied to a private temp file on the backend for the
duration of the git commands and removed afterwards.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backends.base import BackendAdapter
from backends.registry import shell_access
from backends.scripts import shell_path


class GitError(RuntimeError):
    """A git step failed; the message never carries credentials from a URL (it is shown
    on pages, stored as a source's sync error and returned by the API)."""

    def __init__(self, message: str):
        super().__init__(mask_credentials(message))


@contextmanager
def git_ssh_env(adapter: BackendAdapter, deploy_key: str | None) -> Iterator[str]:
    """A ``GIT_SSH_COMMAND=... `` prefix using the deploy key, or ``""`` without one."""
    if not deploy_key:
        yield ""
        return
    try:
        key = Path(deploy_key).expanduser().read_bytes()
    except OSError as exc:
        raise GitError(f"cannot read deploy key {deploy_key}: {exc.strerror}") from exc
    shell = shell_access(adapter)
    made = shell.run_command('umask 077 && f=$(mktemp) && cat > "$f" && echo "$f"', stdin=key, timeout=30)
    remote_key = made.stdout.strip()
    if made.exit_code != 0 or not remote_key:
        raise GitError(f"cannot copy the deploy key to {adapter.name}: {made.stderr.strip()}")
    ssh = f"ssh -i {shlex.quote(remote_key)} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    try:
        yield f"GIT_SSH_COMMAND={shlex.quote(ssh)} "
    finally:
        shell.run_command(f"rm -f {shlex.quote(remote_key)}", timeout=30)


def resolve_branch(adapter: BackendAdapter, repo: str, branch: str, ssh_env: str = "") -> str:
    result = shell_access(adapter).run_command(
        f"{ssh_env}git ls-remote {shlex.quote(repo)} {shlex.quote('refs/heads/' + branch)}", timeout=60
    )
    if result.exit_code != 0:
        raise GitError(f"git ls-remote {repo} failed: {result.stderr.strip()[-500:]}")
    if not result.stdout.strip():
        raise GitError(f"branch {branch!r} not found in {repo}")
    return result.stdout.split()[0]


def checkout(
    adapter: BackendAdapter, repo: str, branch: str, sha: str, parent_dir: str, ssh_env: str = "", postclone: str = ""
) -> str:
    """Clone ``repo`` at ``sha`` into ``<parent_dir>/<sha>`` unless already there; return that path."""
    target = f"{parent_dir.rstrip('/')}/{sha}"
    t = shell_path(target)
    tmp = shell_path(f"{target}.partial")
    steps = [
        f"mkdir -p {shell_path(parent_dir)}",
        f"rm -rf {tmp}",
        f"{ssh_env}git clone --quiet --branch {shlex.quote(branch)} {shlex.quote(repo)} {tmp}",
        f"git -C {tmp} checkout --quiet {shlex.quote(sha)}",
    ]
    if postclone:
        steps.append(f"(cd {tmp} && {postclone})")
    steps.append(f"mv {tmp} {t}")
    # A clone lands under its final name only when complete, so a present dir is usable.
    command = f"if [ ! -d {t}/.git ]; then " + " && ".join(steps) + "; fi"
    result = shell_access(adapter).run_command(command, timeout=600)
    if result.exit_code != 0:
        raise GitError(f"git clone of {repo} failed: {result.stderr.strip()[-500:]}")
    return target


# scheme://userinfo@ — wherever it stands in a text (a URL, or git's own error output).
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^/\s@]+)@", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """A git URL (or a message quoting one) fit to show: a password or token becomes ``***``.

    ``https://user:token@host/repo`` -> ``https://user:***@host/repo``;
    ``https://token@host/repo`` -> ``https://***@host/repo``; ``git@host:repo`` and
    ``ssh://git@host/repo`` are kept (``git`` is a user name, not a secret).
    """

    def masked(match: re.Match[str]) -> str:
        scheme, userinfo = match.group(1), match.group(2)
        user, colon, _ = userinfo.partition(":")
        if colon:
            return f"{scheme}://{user}:***@"
        return match.group(0) if scheme.lower() == "ssh" else f"{scheme}://***@"

    return _USERINFO.sub(masked, text)
