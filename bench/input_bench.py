"""Input benchmark: a large workflow through the API, its paged run detail, a large dry run.

    python bench/input_bench.py [--tasks 100000] [--dry-run-tasks 10000]

Requests go through Django's whole stack (middleware, API, views, templates) with its
test client, without a network in between. Uses a temporary SQLite data dir unless
DATABASE_URL is set (then that database, with tables created by migrate).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from backends.models import Backend  # noqa: E402
from runs.models import ApiToken, Run, Task  # noqa: E402
from sources.models import Source  # noqa: E402
from tests.workloads import simulations  # noqa: E402

T = TypeVar("T")


def timed(label: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = call()
    print(f"{label:<52} {time.perf_counter() - start:8.2f} s")
    return result


def size(content: bytes) -> str:
    return f"{'  its body':<52} {len(content) / 1024:8.0f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--dry-run-tasks", type=int, default=10_000)
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    # A fresh portal: staff may use the built-in local backend (nothing runs: no ticker here).
    Run.objects.all().delete()
    Source.objects.filter(name="bench").delete()
    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    backend, _ = Backend.objects.get_or_create(name="local", defaults={"kind": Backend.Kind.LOCAL})
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})

    body = json.dumps({"backend": backend.name, "workflow": simulations(args.tasks)})
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    print(f"body limit (SCRIPTHUT_MAX_BODY_MB)                    {limit / 1024**2:8.0f} MiB")
    print(f"body of {args.tasks:,} tasks{'':<33} {len(body) / 1024**2:8.1f} MiB")

    created = timed(
        f"POST /api/runs, {args.tasks:,} tasks (201)",
        lambda: api.post("/api/runs", data=body, content_type="application/json"),
    )
    assert created.status_code == 201, created.content[:500]
    run_id = created.json()["id"]
    assert Task.objects.filter(run_id=run_id).count() == args.tasks

    for query in ("", f"?offset={args.tasks - 1000}", "?limit=10000"):
        page = timed(f"GET /api/runs/<id>{query}", partial(api.get, f"/api/runs/{run_id}{query}"))
        assert page.status_code == 200
        print(size(page.content))

    with tempfile.TemporaryDirectory(prefix="scripthut-bench-") as folder:
        Path(folder, "w.json").write_text(json.dumps(simulations(args.dry_run_tasks)))
        Source.objects.create(name="bench", kind="path", path=folder, backend=backend, workflow_files=["w.json"])
        pages = Client()
        pages.force_login(user)
        for _ in range(2):  # the first one also loads the templates
            page = timed(
                f"source dry-run page, {args.dry_run_tasks:,} tasks",
                lambda: pages.get("/sources/bench/workflows/w.json/dry-run"),
            )
        assert page.status_code == 200 and b"more tasks, not listed" in page.content
        print(size(page.content))


if __name__ == "__main__":
    main()
