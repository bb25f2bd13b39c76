"""The bulk SQL fast paths of the engine, kept in one place.

The benchmarks justify them (``bench/engine_bench.py``): Django's ``bulk_update`` builds
a CASE expression per row and field (~5 ms a task here), and ``bulk_create`` spends
~0.2 ms a row preparing 36 columns; a tick moves hundreds of tasks and a workflow
stores ten thousand, so these statements are written plainly, every value a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model

CHUNK = 500  # ids per IN (...) clause, well under SQLite's variable limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def update_rows(rows: Sequence[Model], fields: Sequence[str]) -> None:
    """``UPDATE ... SET <fields> WHERE id = %s`` for each row, in one executemany."""
    if not rows:
        return
    model = type(rows[0])
    model_fields = [model._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    # Only model metadata goes into the SQL text; every value is a parameter.
    sql = "UPDATE {} SET {} WHERE {} = %s".format(  # noqa: S608
        quote(model._meta.db_table),
        ", ".join(f"{quote(str(f.column))} = %s" for f in model_fields),  # type: ignore[union-attr]
        quote("id"),
    )
    values = [
        [f.get_db_prep_save(getattr(row, f.attname), connection) for f in model_fields] + [row.pk]  # type: ignore[union-attr]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


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
