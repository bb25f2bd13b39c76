"""Undisturbed baselines of the fault tests (tests/test_faults.py): the same runs, no kills.

    python bench/faults_bench.py celery     # 200 local tasks, web + 2 workers + beat (PostgreSQL, Redis db 2)
    python bench/faults_bench.py celery --tasks 100   # the PostgreSQL/Redis restart test's run
    python bench/faults_bench.py embedded   # the embedded-mode run (scripthut serve, SQLite)
    python bench/faults_bench.py slurm      # the Slurm run (the test cluster on 127.0.0.1:2222)

Prints the seconds from the run's creation to its end; compare with the fault tests' summaries
(pytest -s prints them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import test_faults  # noqa: E402
from tests.faults import Portal, drive, drop_database, judge, ledger_workflow  # noqa: E402

Reader = Callable[[Path | str], str]


def celery_baseline(base: Path, tasks: int | None = None) -> None:
    n = tasks or test_faults.CELERY_TASKS
    deployed(base, test_faults.LOCAL_CONFIG, "local", n, base / "ledger", read_file)


def slurm_baseline(base: Path, tasks: int | None = None) -> None:
    from tests.cluster import start_cluster

    cluster = start_cluster()
    ledger = f"~/faults-bench-{uuid.uuid4().hex[:8]}.ledger"
    config = test_faults.slurm_config(cluster)

    def read(path: Path | str) -> str:
        return cluster.run_as_user(f"cat {path}; rm -f {path}")

    deployed(base, config, "slurm", tasks or test_faults.SLURM_TASKS, ledger, read, width=10)


def deployed(base: Path, config: str, backend: str, n: int, ledger: Path | str, read: Reader, width: int = 20) -> None:
    """Web, two workers and beat on PostgreSQL and Redis, as in the fault tests."""
    name = f"scripthut_faults_bench_{uuid.uuid4().hex[:6]}"
    portal = Portal(base, name, config)
    portal.prepare()
    try:
        portal.start_deployment()
        report(portal, backend, ledger_workflow(ledger, n, width=width), portal.finished, lambda: read(ledger))
    finally:
        portal.stop_all()
        drop_database(name)


def embedded_baseline(base: Path, tasks: int | None = None) -> None:
    portal = Portal(base, "", test_faults.LOCAL_CONFIG, redis=False)
    portal.prepare()
    try:
        portal.start_serve()
        ledger = base / "ledger"
        workflow = ledger_workflow(ledger, tasks or test_faults.EMBEDDED_TASKS)
        report(portal, "local", workflow, portal.finished, lambda: read_file(ledger))
    finally:
        portal.stop_all()


def read_file(path: Path | str) -> str:
    return Path(path).read_text()


def report(
    portal: Portal,
    backend: str,
    workflow: list[dict[str, Any]],
    finished: Callable[[str], bool],
    ledger_text: Callable[[], str],
) -> None:
    run_id = portal.start_run(workflow, backend, max_concurrent=10)
    seconds = drive(lambda: finished(run_id), lambda elapsed: None, timeout=900)
    outcome = judge(workflow, ledger_text(), portal.task_states(run_id), Counter(), seconds)
    print(f"undisturbed: {outcome.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["celery", "embedded", "slurm"])
    parser.add_argument("--tasks", type=int, help="instead of the fault test's number (the restart test: 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scripthut-faults-bench-") as tmp:
        {"celery": celery_baseline, "embedded": embedded_baseline, "slurm": slurm_baseline}[args.mode](
            Path(tmp), args.tasks
        )


if __name__ == "__main__":
    main()
