"""The triggers that keep ``runs_taskcount`` equal to the tasks, on SQLite and PostgreSQL.

Every insert, change of ``state`` (or ``task_id``, ``run_id``) and delete of a task adds to
or takes from its run's count of that group and state, in the statement that changed the
task: a committed move and its count commit together, a rolled-back or killed one leaves
neither. ``n = n + k`` is done by the database under the counted row's lock, so concurrent
moves add up exactly.

SQLite has only row triggers: one upsert per task changed. PostgreSQL's statement triggers
see all of a statement's rows (transition tables) and add each (run, group, state) once,
in key order, so a COPY of 100,000 tasks is one upsert and two transactions take the
count rows' locks in the same order.

Migration 0027 installs them; a change here is a new migration that calls :func:`install`.
"""

# ruff: noqa: S608  (every statement here is constant text: table and column names, no value)

from __future__ import annotations

from runs.counts.trigger_set import TriggerSet, postgresql_statement_triggers

TABLE = "runs_taskcount"
KEY = "run_id, task_group, state"


def group_sql(task_id: str) -> str:
    """``runs.models.task_group`` in SQL that SQLite and PostgreSQL both run: what comes
    before the id's last dot (rtrim of every character but the dot leaves the id up to its
    last dot, which is then dropped), '' without a dot."""
    head = f"rtrim({task_id}, replace({task_id}, '.', ''))"
    return f"CASE WHEN {head} = '' THEN '' ELSE substr({head}, 1, length({head}) - 1) END"


def _sqlite_add(row: str, k: int) -> str:
    return (
        f"INSERT INTO {TABLE} ({KEY}, n, first_position) "
        f"VALUES ({row}.run_id, {group_sql(f'{row}.task_id')}, {row}.state, {k}, {row}.position) "
        f"ON CONFLICT ({KEY}) DO UPDATE SET n = n + {k}, first_position = min(first_position, excluded.first_position);"
    )


def _sqlite_take(row: str) -> str:
    # Never an insert: a task deleted with its run may be deleted after the run's counts.
    return (
        f"UPDATE {TABLE} SET n = n - 1 WHERE run_id = {row}.run_id "
        f"AND task_group = {group_sql(f'{row}.task_id')} AND state = {row}.state;"
    )


SQLITE = [
    f"CREATE TRIGGER runs_task_count_insert AFTER INSERT ON runs_task BEGIN {_sqlite_add('NEW', 1)} END",
    (
        "CREATE TRIGGER runs_task_count_update AFTER UPDATE OF run_id, task_id, state ON runs_task "
        "WHEN OLD.state IS NOT NEW.state OR OLD.task_id IS NOT NEW.task_id OR OLD.run_id IS NOT NEW.run_id "
        f"BEGIN {_sqlite_take('OLD')} {_sqlite_add('NEW', 1)} END"
    ),
    f"CREATE TRIGGER runs_task_count_delete AFTER DELETE ON runs_task BEGIN {_sqlite_take('OLD')} END",
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS runs_task_count_{op}" for op in ("insert", "update", "delete")]

# Adds (run_id, grp, state, k, position) rows of ``deltas`` to the counts, once per key, in key order.
_PG_ADD = f"""
INSERT INTO {TABLE} ({KEY}, n, first_position)
SELECT run_id, grp, state, sum(k), min(position) FROM deltas
GROUP BY run_id, grp, state HAVING sum(k) <> 0 ORDER BY run_id, grp, state
ON CONFLICT ({KEY}) DO UPDATE SET n = {TABLE}.n + excluded.n,
    first_position = LEAST({TABLE}.first_position, excluded.first_position);
"""

_PG_FUNCTIONS = {
    "insert": f"""
WITH deltas AS (SELECT run_id, {group_sql("task_id")} AS grp, state, 1 AS k, position FROM new_rows)
{_PG_ADD}""",
    "update": f"""
WITH moved AS (
    SELECT o.run_id AS old_run, o.task_id AS old_task_id, o.state AS old_state, n.run_id, n.task_id, n.state, n.position
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE o.state IS DISTINCT FROM n.state OR o.task_id IS DISTINCT FROM n.task_id OR o.run_id IS DISTINCT FROM n.run_id
), deltas AS (
    SELECT old_run AS run_id, {group_sql("old_task_id")} AS grp, old_state AS state, -1 AS k, position FROM moved
    UNION ALL
    SELECT run_id, {group_sql("task_id")}, state, 1, position FROM moved
)
{_PG_ADD}""",
    # Never an insert: a task deleted with its run may be deleted after the run's counts.
    "delete": f"""
UPDATE {TABLE} AS c SET n = c.n - d.k
FROM (SELECT run_id, {group_sql("task_id")} AS grp, state, count(*) AS k FROM old_rows GROUP BY 1, 2, 3) AS d
WHERE c.run_id = d.run_id AND c.task_group = d.grp AND c.state = d.state;
""",
}
POSTGRESQL, POSTGRESQL_DROP = postgresql_statement_triggers("runs_task_count", _PG_FUNCTIONS)


TRIGGERS = TriggerSet("task counts", SQLITE, SQLITE_DROP, POSTGRESQL, POSTGRESQL_DROP)
install = TRIGGERS.install  # what the migrations call
drop = TRIGGERS.drop
