from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import Group, User

from backends.models import Backend
from runs.engine.tick import tick_due_backends
from runs.live import push
from runs.models import Run
from tests.markers import pytest_collection_modifyitems, pytest_runtest_protocol  # noqa: F401  (hooks)

# Modules that some tests import and others load as plugins (pytest_plugins): rewritten on
# first import like the tests, whichever comes first (else pytest warns it cannot rewrite them).
pytest.register_assert_rewrite("tests.cluster", "tests.ldap_server", "tests.oidc_server")

# The test users may use the test `local` backend: it is shared with this group. (A
# config that shares a local backend must also name run_as, whose confinement is
# tested on its own; here tasks run as the test process, for speed.)
LOCAL_USERS = "local-users"


def local_user(username: str, password: str) -> User:
    user = User.objects.create_user(username, password=password)
    user.groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    return user


@pytest.fixture
def user(db: None) -> User:
    return local_user("alice", "pw-alice-123")


@pytest.fixture
def bob(db: None) -> User:
    return local_user("bob", "pw-bob-12345")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("carol", password="pw-carol-123", is_staff=True)


@pytest.fixture
def local_backend(db: None) -> Backend:
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=4, poll_interval=1)
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    return backend


@pytest.fixture
def run_to_end() -> Callable[..., Run]:
    """Tick until the run finishes (or fail after ``timeout`` seconds)."""

    def wait(run: Run, timeout: float = 60) -> Run:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tick_due_backends(force=True)
            run.refresh_from_db()
            if run.is_finished:
                return run
            time.sleep(0.2)
        states = list(run.tasks.values_list("task_id", "state", "reason"))
        raise AssertionError(f"run {run.pk} still {run.status} after {timeout}s: {states}")

    return wait


@pytest.fixture(autouse=True)
def _pushed() -> Iterator[None]:
    """What a test announced is pushed before the next test (runs.live.push renders on its own thread)."""
    yield
    push.flush()
