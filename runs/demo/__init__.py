"""The built-in setup used when no config file exists: a ``local`` backend and a demo workflow."""

from __future__ import annotations

import shlex
from pathlib import Path

from backends.models import Backend
from runs.models import Workflow

DEMO_WORKFLOW_FILE = Path(__file__).with_name("demo-workflow.json")


def ensure_demo_setup() -> Workflow:
    backend, _ = Backend.objects.get_or_create(
        name="local",
        defaults={"kind": Backend.Kind.LOCAL, "max_concurrent": 4, "poll_interval": 2, "settings": {}},
    )
    workflow, _ = Workflow.objects.update_or_create(
        name="demo",
        defaults={
            "backend": backend,
            "command": f"cat {shlex.quote(str(DEMO_WORKFLOW_FILE))}",
            "max_concurrent": 3,
            "description": "A small demo: prepare, four simulations in parallel, then a summary.",
        },
    )
    return workflow
