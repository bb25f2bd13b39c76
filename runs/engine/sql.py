"""The bulk SQL fast paths of the engine, kept in one place.

The benchmarks justify them (``bench/engine_bench.py``): Django's ``bulk_update`` builds
a CASE expression per row and field (~5 ms a task here), and ``bulk_create`` spends
~0.2 ms a row preparing 36 columns; a tick moves hundreds of tasks and a workflow
stores ten thousand, so these statements are written plainly, every value a parameter.

The two UPDATEs are conditional: they change only rows whose ``state`` is still one of
the given states, and say which rows they changed (``RETURNING``, PostgreSQL and SQLite
3.35+), so a caller acts only on what really moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection
from django.db.models import Field, Model, QuerySet

CHUNK = 500  # ids per IN (...) clause, well under SQLite's variable limit
MAX_PARAMS = 30_000  # per statement: under SQLite's 32,766 (older builds) and PostgreSQL's 65,535


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _column(field: Field) -> str:
    return connection.ops.quote_name(str(field.column))


def _placeholder(field: Field) -> str:
    # PostgreSQL types a VALUES list's parameters as text unless told; SQLite needs no type.
    return f"CAST(%s AS {field.db_type(connection)})" if connection.vendor == "postgresql" else "%s"


def update_each(rows: Sequence[Model], fields: Sequence[str], states: Sequence[str]) -> set[Any]:
    """Write each row's own values of ``fields`` where its ``state`` is one of ``states``;
    return the primary keys of the rows changed.

    One statement per chunk: a value that all the rows share is set as it is, the others
    come from a VALUES list joined on the primary key::

        WITH incoming (id, job_id) AS (VALUES (%s, %s), ...)
        UPDATE task SET state = %s, job_id = incoming.job_id FROM incoming
        WHERE task.id = incoming.id AND task.state IN (%s, ...) RETURNING task.id
    """
    if not rows:
        return set()
    model = type(rows[0])
    model_fields: list[Any] = [model._meta.get_field(name) for name in fields]
    shared = [f for f in model_fields if all(getattr(r, f.attname) == getattr(rows[0], f.attname) for r in rows)]
    own = [f for f in model_fields if f not in shared]
    changed: set[Any] = set()
    with connection.cursor() as cursor:
        for chunk in chunks(rows, max(1, min(CHUNK, MAX_PARAMS // (len(own) + 1)))):
            sql, params = _update_sql(chunk, shared, own, states)
            cursor.execute(sql, params)
            changed.update(pk for (pk,) in cursor.fetchall())
    return changed


def _update_sql(
    rows: Sequence[Model], shared: Sequence[Any], own: Sequence[Any], states: Sequence[str]
) -> tuple[str, list[Any]]:
    """The statement of :func:`update_each` for one chunk, and its parameters."""
    model = type(rows[0])
    table, pk = connection.ops.quote_name(model._meta.db_table), model._meta.pk
    assert pk is not None
    id_column = f"{table}.{_column(pk)}"
    assignments = [f"{_column(f)} = %s" for f in shared] + [f"{_column(f)} = incoming.{_column(f)}" for f in own]
    shared_values = [f.get_db_prep_save(getattr(rows[0], f.attname), connection) for f in shared]
    in_states = f"{table}.{connection.ops.quote_name('state')} IN ({', '.join(['%s'] * len(states))})"
    # Only model metadata goes into the SQL text; every value is a parameter.
    if not own:
        ids = ", ".join(["%s"] * len(rows))
        sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {id_column} IN ({ids}) AND {in_states}"  # noqa: S608
        return f"{sql} RETURNING {id_column}", [*shared_values, *(row.pk for row in rows), *states]
    columns = [pk, *own]
    values = "({})".format(", ".join(_placeholder(f) for f in columns))
    incoming = [
        value
        for row in rows
        for value in [row.pk, *(f.get_db_prep_save(getattr(row, f.attname), connection) for f in own)]
    ]
    sql = (
        f"WITH incoming ({', '.join(_column(f) for f in columns)}) AS (VALUES {', '.join([values] * len(rows))}) "  # noqa: S608
        f"UPDATE {table} SET {', '.join(assignments)} FROM incoming "
        f"WHERE {id_column} = incoming.{_column(pk)} AND {in_states} RETURNING {id_column}"
    )
    return sql, [*incoming, *shared_values, *states]


def update_matching(rows: QuerySet[Any], values: dict[str, Any], states: Sequence[str]) -> list[tuple[Any, ...]]:
    """``UPDATE ... SET <values> WHERE id IN (<rows>) AND state IN (<states>)``, one
    statement; returns (primary key, run id) of each row changed."""
    model = rows.model
    fields: list[Any] = [model._meta.get_field(name) for name in values]
    assignments = ", ".join(f"{_column(f)} = %s" for f in fields)
    prepared = [f.get_db_prep_save(values[f.name], connection) for f in fields]
    subquery, sub_params = rows.order_by().values("pk").query.sql_with_params()
    table = connection.ops.quote_name(model._meta.db_table)
    in_states = ", ".join(["%s"] * len(states))
    # Only model metadata and Django's own compiled query go into the SQL text.
    sql = (
        f"UPDATE {table} SET {assignments} WHERE id IN ({subquery}) AND state IN ({in_states}) "  # noqa: S608
        "RETURNING id, run_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*prepared, *sub_params, *states])
        return [tuple(row) for row in cursor.fetchall()]


def insert_rows(model: type[Model], columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert prepared rows: COPY on PostgreSQL (executemany would send 10,000
    statements), one executemany elsewhere."""
    quote = connection.ops.quote_name
    table, column_list = quote(model._meta.db_table), ", ".join(quote(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            placeholders = ", ".join(["%s"] * len(columns))
            # Only model metadata goes into the SQL text; every value is a parameter.
            cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows)  # noqa: S608
