"""A run's tasks counted per group and state, kept by the database as the tasks change.

Pages, the API, the live push, a run's status and its notifications read these counts
(``runs.counts.models.TaskCount``), never the run's tasks, so what they cost does not grow
with the size of a run. Triggers on the task table (``runs.counts.triggers``, installed by
migration 0027) keep them in the same statement, so in the same transaction, as every
insert, state change and delete of a task, whoever makes it; ``scripthut recount``
(``runs.counts.recount``) checks them against the tasks and repairs them.
"""
