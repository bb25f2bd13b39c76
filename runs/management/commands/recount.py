"""``scripthut recount [--run ID ...] [--check]``: compare the stored task counts and cost
sums with the tasks, and put them right.

The database keeps them as tasks change (``runs.counts``), so this should find
nothing; it is for after a restore of part of the tables or a hand edit that went around
the triggers.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.counts.recount import cost_drift, drift, recount


class Command(BaseCommand):
    help = "Check the stored task counts and cost sums against the tasks and repair them (--check: only report)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", action="append", dest="runs", metavar="ID", help="only this run (repeatable)")
        parser.add_argument("--check", action="store_true", help="report differences, change nothing (exit 1 if any)")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = options["runs"]
        found = drift(runs)
        for d in found:
            group = d.task_group or "(no group)"
            self.stdout.write(f"run {d.run_id} group {group} {d.state}: stored {d.stored}, tasks {d.counted}")
        costs = cost_drift(runs)
        for c in costs:
            self.stdout.write(
                f"run {c.run_id} cost (micro-USD, waste, costed, with waste): stored {c.stored}, tasks {c.summed}"
            )
        differ = len(found) + len(costs)
        if options["check"]:
            if differ:
                raise CommandError(f"{differ} stored count(s) or cost sum(s) differ from the tasks")
            self.stdout.write("the stored task counts and cost sums agree with the tasks")
            return
        if differ:
            recount(runs)
        self.stdout.write(f"{differ} stored count(s) or cost sum(s) repaired" if differ else "nothing to repair")
