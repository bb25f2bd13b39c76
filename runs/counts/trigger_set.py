"""Installing and dropping one set of triggers, written once per database the portal runs on."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper


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
