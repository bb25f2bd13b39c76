"""What pages do with what users send them: JSON for those who ask for it, every workflow
problem listed, and long dry runs cut to a page of rows (a 10,000-task table takes seconds to render and is
read by no one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from runs.workflows.parse import WorkflowError

DRY_RUN_ROWS = 500  # task rows a dry-run page shows; the rest are counted

Row = TypeVar("Row")


def wants_json(request: HttpRequest) -> bool:
    """Browsers send "text/html,...,*/*;q=0.8" and get HTML; API clients asking for JSON get JSON."""
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def problems_message(prefix: str, exc: WorkflowError) -> SafeString:
    """A message naming every problem: one on its line, several as a list (escaped)."""
    if len(exc.problems) == 1:
        return format_html("{}: {}", prefix, exc.problems[0])
    items = format_html_join("", "<li>{}</li>", ((p,) for p in exc.problems))
    return format_html('{}: {} problems<ul class="problems">{}</ul>', prefix, exc.count, items)


def first_rows(rows: Sequence[Row]) -> tuple[list[Row], dict[str, int]]:
    """The first DRY_RUN_ROWS rows, and how many there are in all (``count``) and left out (``hidden``)."""
    shown = list(rows[:DRY_RUN_ROWS])
    return shown, {"count": len(rows), "hidden": len(rows) - len(shown)}
