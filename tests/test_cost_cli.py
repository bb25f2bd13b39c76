"""``scripthut pricing`` and costing end to end through the real command, embedded SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import home, scripthut  # noqa: F401  (the fixture)
from tests.test_cost import FIXTURE

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_pricing_import_then_a_run_is_costed(home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    home["PYTHONPATH"] = str(ROOT)  # this checkout's code in the subprocesses
    config = Path(home["SCRIPTHUT_CONFIG"])
    config.write_text(
        "backends:\n  - name: local\n    type: local\n    max_concurrent: 2\n"
        f"pricing:\n  region: eu-west-1\n  price_type: spot_avg\n  source: {FIXTURE}\n"
        "  partitions:\n    normal: c5.xlarge\n"
    )
    scripthut(home, "import-config", str(config))
    assert "11 prices imported" in scripthut(home, "pricing", "import", str(FIXTURE)).stdout
    bad = tmp_path / "bad.json"
    bad.write_text("<html>")
    refused = scripthut(home, "pricing", "import", str(bad), check=False)
    assert refused.returncode != 0 and "nothing imported: not JSON" in refused.stderr

    scripthut(home, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "w.json"
    tasks = [
        {"id": "a", "name": "A", "command": "sleep 0.5", "cpus": 2, "memory": "2G"},
        {"id": "b", "name": "B", "command": "true", "partition": "gpu"},
    ]
    workflow.write_text(json.dumps(tasks))
    assert "completed" in scripthut(home, "run", str(workflow), "--backend", "local", "--wait").stdout
    show = "from runs.models import Task; print(sorted(Task.objects.values_list('task_id', 'priced_with')))"
    costed = scripthut(home, "shell", "-c", show).stdout
    assert "('a', 'c5.xlarge spot_avg $0.08/h in eu-west-1, share 0.5 (max)')" in costed
    assert "('b', '')" in costed  # gpu is not mapped
    assert "1 tasks costed" in scripthut(home, "pricing", "recompute").stdout
    # b's partition mapped later: importing prices costs the ended tasks that had no cost.
    config.write_text(config.read_text() + "    gpu: m5.large\n")
    scripthut(home, "import-config", str(config))
    assert "1 ended tasks without a cost costed now" in scripthut(home, "pricing", "import", str(FIXTURE)).stdout
    assert "prices from " + str(FIXTURE) in scripthut(home, "pricing", "refresh").stdout
