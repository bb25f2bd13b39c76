"""Git checkouts on a backend: resolve a branch to a commit, clone it once, verify it
before every reuse.

Who clones: the account that :func:`cloning_shell` names, the portal's own on a
``local`` backend (never a task's account), the account of the backend's config on SSH
backends (never a user's identity). Checkouts are read-only for tasks: no file or
directory in them, nor on the way to them, may be changed by an account other than the
cloning one (or root), which the clone script checks (:data:`CHECKOUT`); before each
reuse the checkout is verified (still that account's, HEAD at the commit, ``git status``
as the clone left it) and cloned again if not.

Credentials: a password or token in a URL never reaches a command line, a ``.git/config``
or a message. git gets the URL without them (:class:`Remote`); the user name and password
travel on the command's stdin into shell variables, and a credential helper given for that
command only (``git -c``) answers git from them. A deploy key is copied to a private temp
file of the cloning account for the duration of the git commands and removed afterwards.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backends.base import BackendAdapter, ShellAccess
from backends.registry import shell_access

# Answers git's "get" from the environment; ignores "store" and "erase" (nothing kept).
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" '
    '"$SCRIPTHUT_GIT_USERNAME" "$SCRIPTHUT_GIT_PASSWORD"; }; f'
)
# For every git command: no credential helper of the account's own (one such as `store`
# would keep the password), only ours; nothing in a checkout's config runs (fsmonitor, hooks).
GIT_OPTIONS = (
    ("credential.helper", ""),
    ("credential.helper", CREDENTIAL_HELPER),
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("protocol.ext.allow", "never"),
)
STATUS_FILE = "scripthut-status"  # in <checkout>/.git: `git status` as the clone left it

# Shared by the scripts below; $1.. are their arguments, stdin the user name and password.
PREAMBLE = r"""
set -u
umask 022
IFS= read -r git_user || true
IFS= read -r git_password || true
opts=(@OPTIONS@)
git_() {  # a git command that may talk to the remote: the helper answers it
    SCRIPTHUT_GIT_USERNAME=$git_user SCRIPTHUT_GIT_PASSWORD=$git_password GIT_TERMINAL_PROMPT=0 \
        GIT_ASKPASS= SSH_ASKPASS= git "${opts[@]}" "$@"
}
local_git() {  # one that never does (nothing of a checkout's own config gets the credentials)
    GIT_TERMINAL_PROMPT=0 git "${opts[@]}" "$@"
}
die() { printf '%s\n' "$*" >&2; exit 1; }
"""

LS_REMOTE = r"""
ssh=$3
if [ -n "$ssh" ]; then export GIT_SSH_COMMAND=$ssh; fi
git_ ls-remote -- "$1" "refs/heads/$2"
"""

# $1 clone root, $2 commit, $3 branch, $4 URL, $5 postclone, $6 GIT_SSH_COMMAND.
# Prints "reused|cloned|replaced <checkout>".
CHECKOUT = r"""
case $1 in "~") parent=$HOME ;; "~/"*) parent=$HOME/${1#"~/"} ;; *) parent=$1 ;; esac
sha=$2 branch=$3 url=$4 postclone=$5 ssh=$6 me=$(id -u)
if [ -n "$ssh" ]; then export GIT_SSH_COMMAND=$ssh; fi
mkdir -p -- "$parent" && parent=$(cd -P -- "$parent" && pwd) || die "cannot make clone_dir $1"
d=$parent
while :; do
    read -r uid mode < <(stat -c '%u %a' -- "$d") || die "cannot stat $d"
    if [ "$uid" != 0 ] && [ "$uid" != "$me" ]; then
        die "clone_dir $parent: $d belongs to another account (uid $uid), which could replace the checkouts;" \
            "use a directory that only $(id -un) or root may change"
    fi
    if [ $((8#$mode & 8#022)) -ne 0 ] && [ $((8#$mode & 8#1000)) -eq 0 ]; then
        die "clone_dir $parent: $d (mode $mode) may be changed by other accounts, which could replace the" \
            "checkouts; use a directory that only $(id -un) or root may change"
    fi
    [ "$d" = / ] && break
    d=$(dirname -- "$d")
done
target=$parent/$sha
verified() {
    [ -d "$target/.git" ] && [ ! -L "$target" ] && [ -f "$target/.git/@STATUS@" ] || return 1
    [ -z "$(find "$target" ! -type l \( ! -user "$me" -o -perm /022 \) -print -quit)" ] || return 1
    [ "$(local_git -C "$target" rev-parse HEAD)" = "$sha" ] || return 1
    [ -z "$(local_git -C "$target" ls-files -v | grep -v '^H ')" ] || return 1
    status=$(local_git -C "$target" status --porcelain --untracked-files=all --ignored) || return 1
    [ "$status" = "$(cat "$target/.git/@STATUS@")" ]
}
if verified 2>/dev/null; then echo "reused $target"; exit 0; fi
done=cloned
if [ -e "$target" ] || [ -L "$target" ]; then
    # Moved aside, not deleted: tasks of earlier runs may still be working in it.
    mv -- "$target" "$parent/.replaced-$sha-$(date +%s)-$$" || die "cannot move the changed checkout $target aside"
    done=replaced
fi
# A fresh name nobody else can have made (clone_dir may be a sticky shared directory).
tmp=$(mktemp -d -- "$parent/.$sha.partial.XXXXXX") && chmod 755 -- "$tmp" || die "cannot write in $parent"
trap 'rm -rf -- "$tmp"' EXIT
git_ clone --quiet --no-checkout --branch "$branch" -- "$url" "$tmp" || exit 1
git_ -C "$tmp" checkout --quiet "$sha" -- || exit 1
if [ -n "$postclone" ]; then (cd "$tmp" && bash -c "$postclone" </dev/null) || die "postclone failed"; fi
local_git -C "$tmp" status --porcelain --untracked-files=all --ignored > "$tmp/.git/@STATUS@" || exit 1
chmod -R go-w -- "$tmp" && mv -T -- "$tmp" "$target" || die "cannot move the clone to $target"
trap - EXIT
echo "$done $target"
"""


class GitError(RuntimeError):
    """A git step failed; the message never carries credentials from a URL (it is shown
    on pages, stored as a source's sync error and returned by the API)."""

    def __init__(self, message: str):
        super().__init__(mask_credentials(message))


@dataclass(frozen=True)
class Remote:
    """A repository URL as git gets it (``url``: no password or token in it), and the
    user name and password its credential helper answers with."""

    url: str
    username: str = ""
    password: str = ""

    @classmethod
    def of(cls, url: str) -> Remote:
        """``https://user:token@host/r.git`` -> ``https://host/r.git``, ``user``, ``token``;
        a URL with only a token (``https://token@host/r.git``) gives it as the user name.
        SSH URLs and paths are kept as they are (``git@`` names a user, not a secret)."""
        parts = urlsplit(url)
        if "@" not in parts.netloc or parts.scheme.lower() in ("ssh", "git+ssh", "ssh+git", ""):
            return cls(url)
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        remote = cls(parts._replace(netloc=host).geturl(), unquote(user), unquote(password))
        if any(c in remote.username + remote.password for c in "\r\n\0"):
            raise GitError(f"the credentials in {url} contain a line break")
        return remote

    @property
    def stdin(self) -> bytes:
        """What the scripts read their credentials from."""
        return f"{self.username}\n{self.password}\n".encode()

    def env(self) -> dict[str, str]:
        """The same for a git run directly on the portal host (``git_options()`` too)."""
        return {
            "SCRIPTHUT_GIT_USERNAME": self.username,
            "SCRIPTHUT_GIT_PASSWORD": self.password,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
        }


def git_options() -> list[str]:
    """``-c`` options for git run as an argument list (the helper holds no secret)."""
    return [arg for key, value in GIT_OPTIONS for arg in ("-c", f"{key}={value}")]


def _script(body: str) -> str:
    options = " ".join(shlex.quote(arg) for arg in git_options())
    return (PREAMBLE + body).replace("@OPTIONS@", options).replace("@STATUS@", STATUS_FILE)


def cloning_shell(adapter: BackendAdapter) -> ShellAccess:
    """The shell checkouts are made in: the adapter's ``checkout_shell()`` if it has one
    (``local``: the portal's own account, not the tasks'), else the adapter's own."""
    own = getattr(adapter, "checkout_shell", None)
    return own() if callable(own) else shell_access(adapter)


def _run(adapter: BackendAdapter, body: str, args: list[str], remote: Remote, timeout: float) -> tuple[int, str, str]:
    command = " ".join(["bash", "-c", shlex.quote(_script(body)), "scripthut-git", *map(shlex.quote, args)])
    result = cloning_shell(adapter).run_command(command, stdin=remote.stdin, timeout=timeout)
    return result.exit_code, result.stdout, result.stderr


@contextmanager
def git_ssh_env(adapter: BackendAdapter, deploy_key: str | None) -> Iterator[str]:
    """The ``GIT_SSH_COMMAND`` using the deploy key (copied for the cloning account), or ``""``."""
    if not deploy_key:
        yield ""
        return
    try:
        key = Path(deploy_key).expanduser().read_bytes()
    except OSError as exc:
        raise GitError(f"cannot read deploy key {deploy_key}: {exc.strerror}") from exc
    shell = cloning_shell(adapter)
    made = shell.run_command('umask 077 && f=$(mktemp) && cat > "$f" && echo "$f"', stdin=key, timeout=30)
    remote_key = made.stdout.strip()
    if made.exit_code != 0 or not remote_key:
        raise GitError(f"cannot copy the deploy key to {adapter.name}: {made.stderr.strip()}")
    try:
        yield f"ssh -i {shlex.quote(remote_key)} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    finally:
        shell.run_command(f"rm -f {shlex.quote(remote_key)}", timeout=30)


def resolve_branch(adapter: BackendAdapter, repo: str, branch: str, ssh: str = "") -> str:
    remote = Remote.of(repo)
    code, out, err = _run(adapter, LS_REMOTE, [remote.url, branch, ssh], remote, timeout=60)
    if code != 0:
        raise GitError(f"git ls-remote {repo} failed: {err.strip()[-500:]}")
    if not out.strip():
        raise GitError(f"branch {branch!r} not found in {repo}")
    return out.split()[0]


def checkout(
    adapter: BackendAdapter, repo: str, branch: str, sha: str, parent_dir: str, ssh: str = "", postclone: str = ""
) -> str:
    """The checkout of ``sha`` in ``<parent_dir>/<sha>``, as an absolute path: reused if it
    is still as cloned, else (absent, or changed since) cloned afresh. Runs ``postclone``
    in a new clone, before it gets its final name."""
    remote = Remote.of(repo)
    args = [parent_dir, sha, branch, remote.url, postclone, ssh]
    code, out, err = _run(adapter, CHECKOUT, args, remote, timeout=600)
    if code != 0:
        raise GitError(f"git checkout of {repo} at {sha[:12]} failed: {err.strip()[-500:]}")
    _, _, path = out.strip().splitlines()[-1].partition(" ")
    return path


def keep_credentials(new: str, old: str) -> str:
    """A URL typed over a masked one (``https://user:***@host/r.git``, as an admin page
    shows it) with the stored password or token put back in place of ``***``; any other
    URL as typed. GitError when ``***`` stands for a secret that is not stored."""
    if "***@" not in new:
        return new
    old_userinfo = urlsplit(old).netloc.rpartition("@")[0] if "://" in old else ""
    parts = urlsplit(new)
    candidate = parts._replace(netloc=f"{old_userinfo}@{parts.netloc.rpartition('@')[2]}").geturl()
    if not old_userinfo or mask_credentials(candidate) != new:
        raise GitError("*** stands for a stored password or token of another user name: type the password again")
    return candidate


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
