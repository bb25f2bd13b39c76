"""The REST API against its own OpenAPI schema, with schemathesis, on a live portal.

Every check (no server error, documented status codes, content types and bodies,
invalid data refused, valid data accepted, ...) over generated requests, bounded in
examples and time. Runs are created on the local backend and never run: nothing
ticks in a test's live server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from backends.models import Backend
from runs.models import ApiToken

ST = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_api_against_its_schema(live_server: object, user: User, local_backend: Backend, tmp_path: Path) -> None:
    token = ApiToken.issue(user)
    # 50 examples an operation and a 90 s budget: about 1,300 requests in all.
    command = [
        ST,
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_server.url}/api/openapi.json",  # type: ignore[attr-defined]
        "--checks",
        "all",
        "--header",
        f"Authorization: Token {token}",
        "--max-examples",
        "50",
        "--max-time",
        "90",
        "--seed",
        "1",
        "--workers",
        "1",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    # Its report names each failure, with a curl command that reproduces it.
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    # Every operation tested, no check failed (a failure makes the exit code 1). On a loaded
    # machine schemathesis may end with a warning (slow responses) instead of "No issues found".
    operations = re.search(r"Operations:\s+(\d+) selected / (\d+) total", proc.stdout)
    assert operations and operations.group(1) == operations.group(2), proc.stdout[-3000:]
    assert f"Tested: {operations.group(2)}" in proc.stdout and "generated, 0 passed" not in proc.stdout
