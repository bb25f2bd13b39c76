"""``scripthut recount [--run ID ...] [--check]``: compare the stored task counts with the
tasks, and put them right.

The database keeps the counts as tasks change (``runs.counts``), so this should find
nothing; it is for after a restore of part of the tables or a hand edit that went around
the triggers.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.counts.recount import drift, recount


class Command(BaseCommand):
    help = "Check the stored task counts against the tasks and repair them (--check: only report)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", action="append", dest="runs", metavar="ID", help="only this run (repeatable)")
        parser.add_argument("--check", action="store_true", help="report differences, change nothing (exit 1 if any)")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = options["runs"]
        found = drift(runs)
        for d in found:
            group = d.task_group or "(no group)"
            self.stdout.write(f"run {d.run_id} group {group} {d.state}: stored {d.stored}, tasks {d.counted}")
        if options["check"]:
            if found:
                raise CommandError(f"{len(found)} stored count(s) differ from the tasks")
            self.stdout.write("the stored task counts agree with the tasks")
            return
        if found:
            recount(runs)
        self.stdout.write(f"{len(found)} stored count(s) repaired" if found else "nothing to repair")
