"""Installing and dropping one set of triggers, written once per database the portal runs on."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper

# What each statement trigger sees of the rows its statement changed (transition tables).
_TRANSITION_TABLES = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}


def postgresql_statement_triggers(name: str, bodies: dict[str, str]) -> tuple[list[str], list[str]]:
    """The statements that create, and those that drop, a PostgreSQL function and a
    statement trigger ``<name>_<op>`` on runs_task for each op (insert, update, delete) of
    ``bodies``, whose SQL reads the op's transition tables."""
    create = [
        statement
        for op, body in bodies.items()
        for statement in (
            f"CREATE OR REPLACE FUNCTION {name}_{op}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS {name}_{op} ON runs_task",
            f"CREATE TRIGGER {name}_{op} AFTER {op.upper()} ON runs_task {_TRANSITION_TABLES[op]} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_{op}()",
        )
    ]
    drop = [
        statement
        for op in bodies
        for statement in (f"DROP TRIGGER IF EXISTS {name}_{op} ON runs_task", f"DROP FUNCTION IF EXISTS {name}_{op}()")
    ]
    return create, drop


@dataclass(frozen=True)
class TriggerSet:
    what: str  # what the triggers keep, for the error on a database they are not written for
    sqlite: list[str]
    sqlite_drop: list[str]
    postgresql: list[str]
    postgresql_drop: list[str]

    def install(self, connection: BaseDatabaseWrapper) -> None:
        """Create (or replace) the triggers."""
        self._execute(connection, drop=False)

    def drop(self, connection: BaseDatabaseWrapper) -> None:
        self._execute(connection, drop=True)

    def _execute(self, connection: BaseDatabaseWrapper, drop: bool) -> None:
        if connection.vendor == "postgresql":
            statements = self.postgresql_drop if drop else self.postgresql
        elif connection.vendor == "sqlite":
            statements = self.sqlite_drop if drop else [*self.sqlite_drop, *self.sqlite]
        else:
            raise NotImplementedError(f"{self.what} need triggers written for {connection.vendor}")
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
