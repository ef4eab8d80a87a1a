"""Statements that differ between PostgreSQL and SQLite, chosen by the connection's dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def is_postgres(conn: AsyncConnection) -> bool:
    """Whether the connection talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless it collides with a unique key; True when the row was inserted."""
    dialect_insert = postgresql.insert if is_postgres(conn) else sqlite.insert
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return bool(result.rowcount)
