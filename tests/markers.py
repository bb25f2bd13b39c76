"""The suite's markers say what a test needs beyond SQLite; `make test-fast` deselects them all.

The markers themselves are registered in pyproject.toml (``--strict-markers``). This module
keeps them honest, so that the fast path never reaches for a service it did not start:

- at collection, a test that uses a service's fixture (``cluster``, ``moto_server``, ...)
  without that service's marker is an error (``pytest_collection_modifyitems``, imported
  into tests/conftest.py);
- at run time, helpers that start a service without a fixture (Chromium, the fault harness,
  the shared PostgreSQL/Redis) call ``require(marker, what)``, which fails an unmarked test.
"""

from __future__ import annotations

import pytest

# Every marker a test may need; `make test-fast` runs the tests that carry none of them.
NEEDS = ("cluster", "aws", "browser", "faults", "services", "slow")
FAST = "not (" + " or ".join(NEEDS) + ")"

# A fixture that starts or reaches a service, and the marker a test using it must carry.
FIXTURE_MARKERS = {
    "cluster": "cluster",
    "moto_url": "aws",
    "moto_server": "aws",
    "moto_ec2": "aws",
    "slapd": "services",
    "oidc_provider": "services",
}

# Under pytest-xdist (`--dist loadgroup`) the tests of each group keep to one worker, one at a
# time: some cluster tests stop and restart the daemons the others use; the deployments of the
# fault and service tests are many processes each, some share a Redis database, and their
# timings are asserted. A test in both goes with the cluster.
GROUPS = {"cluster": ("cluster",), "deployment": ("faults", "services")}

_running: pytest.Item | None = None  # the test being set up, run or torn down


def unmarked_fixture_uses(items: list[pytest.Item]) -> list[str]:
    """One line per test that uses a service fixture without the service's marker."""
    problems = []
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(fixture)
            if marker and item.get_closest_marker(marker) is None:
                problems.append(f"{item.nodeid} uses the `{fixture}` fixture: mark it @pytest.mark.{marker}")
    return problems


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = unmarked_fixture_uses(items)
    if problems:
        raise pytest.UsageError("tests need markers (tests/markers.py):\n" + "\n".join(problems))
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            group = next((g for g, marks in GROUPS.items() if any(item.get_closest_marker(m) for m in marks)), None)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> object:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def require(marker: str, what: str) -> None:
    """Fail the running test unless it carries ``marker`` (it is about to use ``what``)."""
    if _running is not None and _running.get_closest_marker(marker) is None:
        pytest.fail(f"{_running.nodeid} uses {what}: mark it @pytest.mark.{marker}", pytrace=False)
