"""Statements that differ between PostgreSQL and SQLite, chosen by the connection's dialect."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def is_postgres(conn: AsyncConnection) -> bool:
    """Whether the connection talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"


def one_of(
    conn: AsyncConnection, column: ColumnElement[Any], values: Collection[Any]
) -> ColumnElement[bool]:
    """``column IN (values)``. On PostgreSQL the values travel as one array (``= ANY``), so the
    statement, and the prepared statement the driver keeps for it, is the same however many
    values there are (an expanded ``IN`` makes a new one for every count)."""
    if is_postgres(conn):
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    return column.in_(list(values))


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless it collides with a unique key; True when the row was inserted."""
    dialect_insert = postgresql.insert if is_postgres(conn) else sqlite.insert
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return bool(result.rowcount)
