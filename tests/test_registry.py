"""The backend registry: every kind loads from its package, its settings validate, and
the interface split holds (logs on every adapter, a shell only on local and SSH). Every
case runs over every registered kind (each package's ``Settings.example``): a new kind
needs no line here. (What each adapter does: tests/test_adapter_contract.py.)"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from backends.base import (
    BackendAdapter,
    BackendError,
    BackendUnavailable,
    JobSpec,
    PollResult,
    ShellAccess,
    SubmitResult,
    TaskLog,
)
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import BACKENDS, adapter_class, has_shell, settings_class, shell_access
from backends.schema import BackendSettings

ROOT = Path(__file__).parent.parent


def example(kind: str) -> dict[str, Any]:
    """The least the kind's settings need, from its package."""
    return dict(settings_class(kind).example)


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_kind_imports_and_its_settings_validate(kind: str) -> None:
    model = settings_class(kind)
    assert issubclass(model, BackendSettings)
    assert model.model_fields["type"].annotation == Literal[kind]  # the config file's `type`
    settings = validate_backend_settings(kind, example(kind))
    assert validate_backend_settings(kind, settings) == settings  # what is stored validates again
    with pytest.raises(ValueError, match="no_such_key: unknown key"):
        validate_backend_settings(kind, {**example(kind), "no_such_key": 1})


def test_kind_names_and_labels_come_from_the_registry() -> None:
    assert Backend.Kind.choices == [(kind, entry.label) for kind, entry in BACKENDS.items()]
    assert (Backend.Kind.LOCAL, Backend.Kind.SLURM, Backend.Kind.PBS) == ("local", "slurm", "pbs")
    assert Backend(kind="pbs").get_kind_display() == "PBS/Torque (SSH)"
    # Not the column's choices: those would be frozen in a migration.
    assert not Backend._meta.get_field("kind").choices


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_an_adapter_with_a_shell_reads_logs_through_it(kind: str, tmp_path: Path) -> None:
    row = Backend(name=kind, kind=kind, settings=validate_backend_settings(kind, example(kind)))
    adapter = adapter_class(kind)(row, tmp_path)  # remote adapters connect only when used
    assert isinstance(adapter, BackendAdapter)
    assert isinstance(adapter, ShellAccess) == has_shell(kind)
    assert has_shell(kind) or kind not in ("local", "slurm", "pbs")  # the built-in kinds with a shell
    if has_shell(kind):
        assert shell_access(adapter) is adapter
        log = TaskLog(job_id="1", stream="output", path="logs/t.out", working_dir="/work/run")
        assert adapter.log_location(log) == "/work/run/logs/t.out"
    adapter.close()


def test_local_adapter_reads_a_log_through_its_shell(tmp_path: Path) -> None:
    # Logs outside a run's directory are read from allowed_paths only, never the data dir.
    logs = tmp_path / "logs"
    row = Backend(name="local", kind="local", settings={"allowed_paths": [str(logs)]})
    adapter = adapter_class("local")(row, tmp_path / "data")
    logs.mkdir()
    (logs / "t.out").write_text("hello\n")
    assert adapter.read_log(TaskLog("1", "output", "t.out", str(logs))) == "hello\n"
    with pytest.raises(FileNotFoundError):
        adapter.read_log(TaskLog("1", "error", "", str(logs)))


def test_batch_has_an_adapter_and_no_shell() -> None:
    assert adapter_class("batch").__name__ == "BatchAdapter"
    assert not has_shell("batch") and has_shell("slurm") and has_shell("local")


@pytest.mark.parametrize("kind", ["lsf"])  # not registered (ecs was, before it had a package)
def test_kinds_without_an_adapter_are_unavailable(kind: str) -> None:
    with pytest.raises(BackendUnavailable) as info:
        adapter_class(kind)
    assert str(info.value) == f"backend type {kind!r} is not supported by this version of ScriptHut"


class JobsOnlyAdapter(BackendAdapter):
    """Like the AWS Batch adapter: jobs and logs, no shell."""

    def render_script(self, job: JobSpec) -> str:
        return ""

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        return []

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        return PollResult(statuses={})

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        return {}

    def cancel(self, job_ids: Sequence[str]) -> None:
        return None

    def log_location(self, log: TaskLog) -> str:
        return f"stream {log.job_id}"

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        return ""


def test_shell_access_refuses_a_backend_without_a_shell(tmp_path: Path) -> None:
    adapter = JobsOnlyAdapter(Backend(name="q", kind="batch", settings={}), tmp_path)
    with pytest.raises(BackendError, match="'q' has no shell"):
        shell_access(adapter)


def test_backend_class_names_are_unique_in_the_project() -> None:
    def classes(path: Path) -> list[str]:
        tree = ast.parse(path.read_text())
        return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name != "Meta"]

    files = [p for p in ROOT.rglob("*.py") if not {".venv", "migrations"} & set(p.relative_to(ROOT).parts)]
    everywhere = Counter(name for path in files for name in classes(path))
    ours = {name for path in (ROOT / "backends").rglob("*.py") for name in classes(path)}
    assert {name for name in ours if everywhere[name] > 1} == set()
