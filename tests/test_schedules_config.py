"""Schedules in the config file (``schedules:``): checked as the API checks them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from runs.models import Schedule, Workflow
from scripthut_site.config import ConfigError, import_config

CONFIG = """
backends:
  - {name: here, type: local}
workflows:
  - {name: refresh, backend: here, command: "echo '{}'"}
schedules:
  - {name: nightly, workflow: refresh, cron: "0 2 * * *", timezone: Europe/Paris, overlap: skip, owner: carol}
"""


def test_a_schedule_in_the_config_is_made_then_updated(staff: User) -> None:
    report = import_config(CONFIG)
    assert report.created["schedules"] == 1
    nightly = Schedule.objects.get()
    assert (nightly.workflow, nightly.owner, nightly.timezone, nightly.enabled) == (
        Workflow.objects.get(),
        staff,
        "Europe/Paris",
        True,
    )
    assert import_config(CONFIG).updated["schedules"] == 0  # unchanged
    report = import_config(CONFIG.replace('"0 2 * * *"', '"0 3 * * *"'))
    assert report.updated["schedules"] == 1 and Schedule.objects.get().cron == "0 3 * * *"


def test_bad_schedules_name_every_problem_and_change_nothing(staff: User) -> None:
    bad = CONFIG.replace('"0 2 * * *"', '"0 2 * *"').replace("Europe/Paris", "Mars/Olympus")
    bad = bad.replace("overlap: skip", "overlap: sometimes")
    with pytest.raises(ConfigError) as caught:
        import_config(bad)
    text = str(caught.value)
    assert "schedules[0].cron" in text and "has 4 fields" in text
    assert "schedules[0].timezone" in text and "Mars/Olympus" in text
    assert "schedules[0].overlap" in text
    assert not Schedule.objects.exists() and not Workflow.objects.exists()


def test_an_unknown_owner_is_an_error(db: None) -> None:
    with pytest.raises(ConfigError) as caught:
        import_config(CONFIG)
    assert "schedules[0].owner: no active user named 'carol'" in str(caught.value)
    assert not Workflow.objects.exists()  # the whole import is refused


def test_a_schedule_needs_a_workflow_or_a_source_file(staff: User) -> None:
    with pytest.raises(ConfigError) as caught:
        import_config(CONFIG.replace("workflow: refresh,", "source: refresh,"))
    assert "schedules[0]: give either workflow, or source and file" in str(caught.value)
