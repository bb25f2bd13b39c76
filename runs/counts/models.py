"""The stored counts: one row per run, task group and state."""

from __future__ import annotations

from django.db import models


class TaskCount(models.Model):
    """How many of a run's tasks of one group (``runs.models.task_group``) are in one state.

    Written only by the database's triggers (``runs.counts.triggers``) and by
    ``runs.counts.recount``; a row may say 0 once its tasks moved on.
    """

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="task_counts")
    task_group = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16)
    n = models.IntegerField(default=0)
    # The smallest position of a task counted here: the run page lists groups in the order of their first task.
    first_position = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "task_group", "state"], name="unique_task_count"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.task_group or '(no group)'} {self.state}: {self.n}"


class CostSum(models.Model):
    """A run's task costs added up (``runs.costing.summary``): kept by the database's
    triggers (``runs.counts.cost_triggers``) in the statement that sets a task's cost, so
    reading a run's cost reads one row. In millionths of a dollar (the tasks' cost has six
    decimals), so that the sums are exact on SQLite too; no row: nothing costed."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, primary_key=True, related_name="cost_sum")
    cost_micro_usd = models.BigIntegerField(default=0)
    waste_micro_usd = models.BigIntegerField(default=0)
    costed = models.IntegerField(default=0)  # tasks with a cost
    wasted = models.IntegerField(default=0)  # tasks with a waste figure (efficiency data)

    def __str__(self) -> str:
        return f"{self.run_id}: {self.costed} tasks costed"
