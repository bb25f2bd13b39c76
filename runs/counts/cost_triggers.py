"""The triggers that keep ``runs_costsum`` (a run's task costs added up) equal to its
tasks' ``cost`` and ``waste_cost``, on SQLite and PostgreSQL.

As the task counts (:mod:`runs.counts.triggers`): every insert, delete and change of a
task's cost (or run) adds to or takes from its run's sums in the statement that changed
the task, so a cost committed and its sum commit together, a process killed before the
commit leaves neither, and concurrent changes add up under the sum row's lock. Amounts are
whole millionths of a dollar (the tasks' cost has six decimals): exact on SQLite, whose
decimals are floating point, too.

Migration 0028 installs them; a change here is a new migration that calls :func:`install`.
"""

# ruff: noqa: S608  (every statement here is constant text: table and column names, no value)

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

from runs.counts.trigger_set import TriggerSet, postgresql_statement_triggers

TABLE = "runs_costsum"
SUMS = "cost_micro_usd, waste_micro_usd, costed, wasted"
HAS_COST = "({row}cost IS NOT NULL OR {row}waste_cost IS NOT NULL)"


def micro_sql(column: str, integer: str) -> str:
    """A cost column in whole millionths of a dollar; 0 when it is null."""
    return f"COALESCE(CAST(round({column} * 1000000) AS {integer}), 0)"


def amounts_sql(row: str, integer: str, sign: str = "") -> str:
    """The four amounts one task adds to its run's sums (``sign`` "-": takes)."""
    return ", ".join(
        (
            f"{sign}{micro_sql(f'{row}cost', integer)}",
            f"{sign}{micro_sql(f'{row}waste_cost', integer)}",
            f"{sign}(CASE WHEN {row}cost IS NULL THEN 0 ELSE 1 END)",
            f"{sign}(CASE WHEN {row}waste_cost IS NULL THEN 0 ELSE 1 END)",
        )
    )


_ADD_ON_CONFLICT = (
    f"ON CONFLICT (run_id) DO UPDATE SET cost_micro_usd = {TABLE}.cost_micro_usd + excluded.cost_micro_usd, "
    f"waste_micro_usd = {TABLE}.waste_micro_usd + excluded.waste_micro_usd, "
    f"costed = {TABLE}.costed + excluded.costed, wasted = {TABLE}.wasted + excluded.wasted"
)


def _sqlite_add(row: str, sign: str = "") -> str:
    amounts = amounts_sql(f"{row}.", "INTEGER", sign)
    return f"INSERT INTO {TABLE} (run_id, {SUMS}) VALUES ({row}.run_id, {amounts}) {_ADD_ON_CONFLICT};"


SQLITE = [
    (
        "CREATE TRIGGER runs_task_cost_insert AFTER INSERT ON runs_task "
        f"WHEN {HAS_COST.format(row='NEW.')} BEGIN {_sqlite_add('NEW')} END"
    ),
    (
        "CREATE TRIGGER runs_task_cost_update AFTER UPDATE OF run_id, cost, waste_cost ON runs_task "
        "WHEN OLD.cost IS NOT NEW.cost OR OLD.waste_cost IS NOT NEW.waste_cost OR OLD.run_id IS NOT NEW.run_id "
        f"BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW')} END"
    ),
    # Never an insert: a task deleted with its run may be deleted after the run's sums.
    (
        "CREATE TRIGGER runs_task_cost_delete AFTER DELETE ON runs_task "
        f"WHEN {HAS_COST.format(row='OLD.')} BEGIN "
        f"UPDATE {TABLE} SET cost_micro_usd = cost_micro_usd - {micro_sql('OLD.cost', 'INTEGER')}, "
        f"waste_micro_usd = waste_micro_usd - {micro_sql('OLD.waste_cost', 'INTEGER')}, "
        "costed = costed - (OLD.cost IS NOT NULL), wasted = wasted - (OLD.waste_cost IS NOT NULL) "
        "WHERE run_id = OLD.run_id; END"
    ),
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS runs_task_cost_{op}" for op in ("insert", "update", "delete")]


def _pg_amounts(table: str, sign: str = "") -> str:
    return f"SELECT run_id, {amounts_sql('', 'bigint', sign)} FROM {table} WHERE {HAS_COST.format(row='')}"


# Adds the (run_id, amounts...) rows of ``deltas`` to the sums, once per run, in run order.
_PG_ADD = f"""
INSERT INTO {TABLE} (run_id, {SUMS})
SELECT run_id, sum(c), sum(w), sum(nc), sum(nw) FROM deltas
GROUP BY run_id HAVING sum(c) <> 0 OR sum(w) <> 0 OR sum(nc) <> 0 OR sum(nw) <> 0 ORDER BY run_id
{_ADD_ON_CONFLICT};
"""
_COLUMNS = "(run_id, c, w, nc, nw)"
_PG_FUNCTIONS = {
    "insert": f"WITH deltas {_COLUMNS} AS ({_pg_amounts('new_rows')}) {_PG_ADD}",
    # New amounts minus old ones: no join of the two tables needed.
    "update": (
        f"WITH deltas {_COLUMNS} AS ({_pg_amounts('new_rows')} UNION ALL {_pg_amounts('old_rows', '-')}) {_PG_ADD}"
    ),
    "delete": f"""
UPDATE {TABLE} AS s SET cost_micro_usd = s.cost_micro_usd - d.c, waste_micro_usd = s.waste_micro_usd - d.w,
    costed = s.costed - d.nc, wasted = s.wasted - d.nw
FROM (SELECT run_id, sum(c) AS c, sum(w) AS w, sum(nc) AS nc, sum(nw) AS nw
      FROM ({_pg_amounts("old_rows")}) AS t {_COLUMNS} GROUP BY run_id) AS d
WHERE s.run_id = d.run_id;
""",
}
POSTGRESQL, POSTGRESQL_DROP = postgresql_statement_triggers("runs_task_cost", _PG_FUNCTIONS)


def backfill_sql(integer: str, where: str = "") -> str:
    """Sum the costs of the tasks there are (of the runs ``where`` selects) into new rows."""
    condition = HAS_COST.format(row="") + (f" AND {where}" if where else "")
    return (
        f"INSERT INTO {TABLE} (run_id, {SUMS}) SELECT run_id, "
        f"sum({micro_sql('cost', integer)}), sum({micro_sql('waste_cost', integer)}), count(cost), count(waste_cost) "
        f"FROM runs_task WHERE {condition} GROUP BY run_id"
    )


def integer_type(connection: BaseDatabaseWrapper) -> str:
    return "bigint" if connection.vendor == "postgresql" else "INTEGER"


TRIGGERS = TriggerSet("cost sums", SQLITE, SQLITE_DROP, POSTGRESQL, POSTGRESQL_DROP)
install = TRIGGERS.install  # what the migrations call
drop = TRIGGERS.drop
