"""Queries on the worker registry: who polled, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import insert_ignore
from oris.store.tables import workers


async def touch(conn: AsyncConnection, worker_id: str, decision: str, now_ms: int) -> None:
    """Record that a worker polled."""
    inserted = await insert_ignore(
        conn,
        workers,
        {
            "worker_id": worker_id,
            "first_seen_at_ms": now_ms,
            "last_seen_at_ms": now_ms,
            "last_decision": decision,
        },
    )
    if not inserted:
        await conn.execute(
            update(workers)
            .where(workers.c.worker_id == worker_id)
            .values(last_seen_at_ms=now_ms, last_decision=decision)
        )


async def seen_since(conn: AsyncConnection, since_ms: int, limit: int) -> list[dict[str, Any]]:
    """Workers that polled since ``since_ms``, most recent first."""
    statement = (
        select(workers)
        .where(workers.c.last_seen_at_ms >= since_ms)
        .order_by(workers.c.last_seen_at_ms.desc())
        .limit(limit)
    )
    return [dict(row) for row in (await conn.execute(statement)).mappings()]


async def count_since(conn: AsyncConnection, since_ms: int) -> int:
    """How many workers polled since ``since_ms``."""
    statement = select(func.count()).where(workers.c.last_seen_at_ms >= since_ms)
    return int((await conn.execute(statement)).scalar_one())
