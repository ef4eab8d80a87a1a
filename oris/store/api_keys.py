"""Queries on managed API keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.tables import api_keys


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A row of ``runtime_api_keys`` (the secret itself is never stored)."""

    key_id: str
    secret_hash: str
    status: str
    role: str
    worker_id_prefix: str | None
    description: str | None
    created_at_ms: int
    updated_at_ms: int
    last_used_at_ms: int | None


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(**{name: row[name] for name in ApiKeyRecord.__slots__})


async def get(conn: AsyncConnection, key_id: str, *, lock: bool = False) -> ApiKeyRecord | None:
    """One key."""
    statement = select(api_keys).where(api_keys.c.key_id == key_id)
    if lock:
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else _record(row)


async def list_keys(conn: AsyncConnection) -> list[ApiKeyRecord]:
    """Every key, oldest first."""
    rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at_ms))).mappings()
    return [_record(row) for row in rows]


async def count_active(conn: AsyncConnection) -> int:
    """How many keys can authenticate."""
    statement = select(func.count()).where(api_keys.c.status == "active")
    return int((await conn.execute(statement)).scalar_one())


async def any_exists(conn: AsyncConnection) -> bool:
    """Whether any key was ever created (disabled keys stay in the table)."""
    statement = select(api_keys.c.key_id).limit(1)
    return (await conn.execute(statement)).first() is not None


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Create a key."""
    await conn.execute(api_keys.insert().values(**values))


async def update_key(conn: AsyncConnection, key_id: str, values: dict[str, Any]) -> bool:
    """Change a key; False when it does not exist."""
    result = await conn.execute(
        update(api_keys).where(api_keys.c.key_id == key_id).values(**values)
    )
    return bool(result.rowcount)
