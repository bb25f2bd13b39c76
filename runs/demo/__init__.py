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
    wanted = {
        "backend": backend,
        "command": f"cat {shlex.quote(str(DEMO_WORKFLOW_FILE))}",
        "max_concurrent": 3,
        "description": "A small demo: prepare, four simulations in parallel, then a summary.",
    }
    workflow, created = Workflow.objects.get_or_create(name="demo", defaults=wanted)
    changed = [name for name, value in wanted.items() if getattr(workflow, name) != value]
    if changed and not created:  # saved only when it differs: every save is an audited change
        for name in changed:
            setattr(workflow, name, wanted[name])
        workflow.save(update_fields=changed)
    return workflow
