"""Whose account work on a backend runs under.

A backend's ``ssh.identity`` is ``shared`` (every job runs as the account of the config)
or ``per_user``: each portal user registers their own cluster login and key
(:class:`~backends.models.ClusterIdentity`, on :data:`SETTINGS_PATH`), and their runs are
submitted, polled, cancelled and read as them, so one user's jobs cannot read another's
files. A user without an identity cannot start runs there.

A ``local`` backend with ``run_as: per_user`` is the same with OS accounts: each user's
is named by the config (:mod:`backends.local.accounts`), and a user without one, or whose
account does not exist on the host, cannot start runs there.
"""

from __future__ import annotations

from django.contrib.auth.models import User

from backends.base import BackendAdapter, BackendUnavailable, OsAccount
from backends.local.accounts import account_problem, os_account
from backends.models import Backend, ClusterIdentity
from backends.registry import get_adapter

SETTINGS_PATH = "/settings/identities"  # the page where users add theirs


class NoIdentity(BackendUnavailable):  # noqa: N818  (reads better at the raise site)
    """A per_user backend, and a user with no identity on it."""


def _username(user_id: int) -> str:
    return User.objects.filter(pk=user_id).values_list("username", flat=True).first() or ""


def missing_identity(backend: Backend, user_id: int) -> str:
    """Why a user's tasks wait, and what to do about it."""
    if not backend.takes_identities:
        return f"no OS account to run as on {backend.name}: {account_problem(backend.settings, _username(user_id))}"
    return f"no cluster identity for {backend.name}: add one at {SETTINGS_PATH}"


def refusal(backend: Backend, user_id: int) -> str:
    """Why a user without an identity cannot start a run on a per_user backend."""
    if not backend.takes_identities:
        problem = account_problem(backend.settings, _username(user_id))
        return f"backend {backend.name!r} runs tasks as each user's own OS account: {problem}; ask an admin"
    return (
        f"backend {backend.name!r} runs jobs as each user's own cluster account, and you have no "
        f"cluster identity for it: add your cluster username and SSH key at {SETTINGS_PATH}"
    )


def identity_of(backend: Backend, user_id: int) -> ClusterIdentity | OsAccount | None:
    """The account ``user_id``'s work on a per_user backend runs as; None if they have none."""
    if not backend.takes_identities:
        username = _username(user_id)
        if account_problem(backend.settings, username):
            return None
        return OsAccount(user_id=user_id, username=os_account(backend.settings, username))
    return ClusterIdentity.objects.filter(backend=backend, user_id=user_id).first()


def needs_identity(backend: Backend, user_id: int) -> bool:
    """True when work of this user on this backend cannot run: per_user, and no identity."""
    return backend.per_user and identity_of(backend, user_id) is None


def adapter_as(backend: Backend, user_id: int | None) -> BackendAdapter:
    """The adapter acting for ``user_id``: their identity's on a per_user backend (NoIdentity
    if they have none), the account of the config otherwise or for no one in particular."""
    if not backend.per_user or user_id is None:
        return get_adapter(backend)
    identity = identity_of(backend, user_id)
    if identity is None:
        raise NoIdentity(missing_identity(backend, user_id))
    return get_adapter(backend, identity)
