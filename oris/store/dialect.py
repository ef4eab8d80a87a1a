"""Statements that differ between PostgreSQL and SQLite, chosen by the connection's dialect."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Table, Text, any_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def pg_cast_type(table: Table, column: str) -> str:
    """The PostgreSQL type to cast a bound value to before it is written to ``column``:
    the column's type without a length. An explicit cast to ``VARCHAR(n)`` silently cuts a
    longer value; without the length, the assignment to the column refuses it instead."""
    column_type = table.c[column].type
    if isinstance(column_type, String):
        return "TEXT" if isinstance(column_type, Text) else "VARCHAR"
    return str(column_type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def is_postgres(conn: AsyncConnection) -> bool:
    """Whether the connection talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"


def in_list(postgres: bool, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN :name`` for a statement built once and reused: on PostgreSQL the values
    travel as one array (``= ANY``), so the statement text, and the prepared statement the
    driver keeps for it, is the same however many values there are; SQLite expands the list.

    Hot statements are built once per shape (``functools.cache``) with named parameters:
    composing a SQLAlchemy statement and its cache key on every call costs several times
    what executing it does."""
    if postgres:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


@functools.cache
def row_by_key(table: Table, key: str, lock: bool) -> Select[Any]:
    """``SELECT * FROM table WHERE key = :key``, optionally ``FOR UPDATE``; built once."""
    statement = select(table).where(table.c[key] == bindparam(key))
    return statement.with_for_update() if lock else statement


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless it collides with a unique key; True when the row was inserted."""
    dialect_insert = postgresql.insert if is_postgres(conn) else sqlite.insert
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return bool(result.rowcount)
