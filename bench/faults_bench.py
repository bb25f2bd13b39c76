"""Undisturbed baselines of the fault tests (tests/test_faults.py): the same runs, no kills.

    python bench/faults_bench.py celery     # 200 local tasks, web + 2 workers + beat (PostgreSQL, Redis db 2)
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import test_faults  # noqa: E402
from tests.faults import Portal, drive, drop_database, judge, ledger_workflow  # noqa: E402


def celery_baseline(base: Path) -> None:
    name = f"scripthut_faults_bench_{uuid.uuid4().hex[:6]}"
    portal = Portal(base, name, test_faults.LOCAL_CONFIG)
    portal.prepare()
    try:
        portal.start_web()
        for worker in ("worker1", "worker2"):
            portal.start_worker(worker)
        portal.start_beat()
        report(portal, base, test_faults.CELERY_TASKS, "local", portal.finished)
    finally:
        portal.stop_all()
        drop_database(name)


def embedded_baseline(base: Path) -> None:
    portal = Portal(base, "", test_faults.LOCAL_CONFIG, redis=False)
    portal.prepare()
    try:
        portal.start_web()
        report(
            portal,
            base,
            test_faults.EMBEDDED_TASKS,
            "local",
            lambda run_id: portal.run_status(run_id) not in test_faults.UNFINISHED,
        )
    finally:
        portal.stop_all()


def report(portal: Portal, base: Path, n: int, backend: str, finished: object) -> None:
    ledger = base / "ledger"
    workflow = ledger_workflow(ledger, n)
    run_id = portal.start_run(workflow, backend, max_concurrent=10)
    seconds = drive(lambda: finished(run_id), lambda elapsed: None, timeout=900)  # type: ignore[operator]
    states = {t: ("completed", "") for t in ledger.read_text().split()}
    outcome = judge(workflow, ledger, states, Counter(), seconds)
    print(f"undisturbed: {outcome.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["celery", "embedded"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scripthut-faults-bench-") as tmp:
        {"celery": celery_baseline, "embedded": embedded_baseline}[args.mode](Path(tmp))


if __name__ == "__main__":
    main()
