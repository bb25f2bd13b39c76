"""The markers keep `make test-fast` honest: a test that uses a service must say so."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.markers import FAST, NEEDS

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
INI = """
[pytest]
addopts = --strict-markers -p no:django -p no:cacheprovider
markers =
    cluster: the test cluster
    browser: Chromium
"""
CONFTEST = """
import pytest
from tests.markers import pytest_collection_modifyitems, pytest_runtest_protocol

@pytest.fixture
def cluster():
    return "the cluster"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_every_marker_is_registered_and_the_fast_path_leaves_out_each() -> None:
    registered = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert sorted(line.split(":")[0] for line in registered) == sorted(NEEDS)
    makefile = (ROOT / "Makefile").read_text()
    assert f"FAST := {FAST}\n" in makefile
    assert '-m "$(FAST)"' in makefile.split("test-fast:")[1].split("\n\n")[0]


def test_a_test_using_a_service_fixture_without_its_marker_is_refused(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest

        def test_unmarked(cluster):
            pass

        @pytest.mark.cluster
        def test_marked(cluster):
            pass
        """
    )
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_unmarked uses the `cluster` fixture: mark it @pytest.mark.cluster"])
    assert "test_marked" not in result.stderr.str()


def test_a_helper_that_starts_a_service_fails_an_unmarked_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest
        from tests.markers import require

        def test_unmarked():
            require("browser", "Chromium")

        @pytest.mark.browser
        def test_marked():
            require("browser", "Chromium")
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked uses Chromium: mark it @pytest.mark.browser"])


def test_the_tests_that_share_a_service_keep_to_one_worker(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the subprocess imports tests.markers
    monkeypatch.setenv("SEEN", str(seen))
    suite.makepyfile(
        """
        import os
        from pathlib import Path

        import pytest

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.cluster
        def test_on_the_cluster(n):
            (Path(os.environ["SEEN"]) / f"{n}-{os.environ['PYTEST_XDIST_WORKER']}").touch()

        @pytest.mark.parametrize("n", range(6))
        def test_anywhere(n):
            pass
        """
    )
    result = suite.runpytest_subprocess("-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=12)
    runs = [path.name.split("-") for path in seen.iterdir()]
    assert len(runs) == 6 and len({worker for _, worker in runs}) == 1, runs
