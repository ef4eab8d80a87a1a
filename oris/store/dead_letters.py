"""Queries on the dead-letter queue and retry history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import ReplayStatus
from oris.store.dialect import insert_ignore
from oris.store.records import DeadLetterRecord, dump_json
from oris.store.tables import dead_letters, retry_history


async def upsert(
    conn: AsyncConnection,
    *,
    attempt_id: str,
    run_id: str,
    attempt_no: int,
    reason: str,
    error: Any,
    now_ms: int,
) -> None:
    """Dead-letter an attempt; a replayed entry that fails again goes back to ``pending``."""
    values = {
        "run_id": run_id,
        "attempt_no": attempt_no,
        "terminal_status": "failed",
        "reason": reason,
        "error_json": None if error is None else dump_json(error),
        "dead_at_ms": now_ms,
        "replay_status": ReplayStatus.PENDING.value,
    }
    inserted = await insert_ignore(
        conn, dead_letters, {"attempt_id": attempt_id, "replay_count": 0, **values}
    )
    if not inserted:
        await conn.execute(
            update(dead_letters).where(dead_letters.c.attempt_id == attempt_id).values(**values)
        )


async def get(
    conn: AsyncConnection, attempt_id: str, *, lock: bool = False
) -> DeadLetterRecord | None:
    """One entry."""
    statement = select(dead_letters).where(dead_letters.c.attempt_id == attempt_id)
    if lock:
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else DeadLetterRecord.from_row(row)


async def list_entries(
    conn: AsyncConnection, *, replay_status: str | None, limit: int
) -> list[DeadLetterRecord]:
    """Newest first."""
    statement = (
        select(dead_letters)
        .order_by(dead_letters.c.dead_at_ms.desc(), dead_letters.c.attempt_id)
        .limit(limit)
    )
    if replay_status is not None:
        statement = statement.where(dead_letters.c.replay_status == replay_status)
    return [DeadLetterRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def mark_replayed(conn: AsyncConnection, attempt_id: str, now_ms: int) -> int | None:
    """Pending → replayed, guarded; returns the new replay count, or None if not pending."""
    result = await conn.execute(
        update(dead_letters)
        .where(
            dead_letters.c.attempt_id == attempt_id,
            dead_letters.c.replay_status == ReplayStatus.PENDING.value,
        )
        .values(
            replay_status=ReplayStatus.REPLAYED.value,
            replay_count=dead_letters.c.replay_count + 1,
            last_replayed_at_ms=now_ms,
        )
        .returning(dead_letters.c.replay_count)
    )
    value = result.scalar()
    return None if value is None else int(value)


async def count_by_replay_status(conn: AsyncConnection) -> dict[str, int]:
    """DLQ depth per replay status."""
    statement = select(dead_letters.c.replay_status, func.count()).group_by(
        dead_letters.c.replay_status
    )
    return {str(s): int(c) for s, c in (await conn.execute(statement)).all()}


async def add_retry(
    conn: AsyncConnection,
    *,
    attempt_id: str,
    attempt_no: int,
    strategy: str,
    backoff_ms: int,
    max_retries: int,
    scheduled_at_ms: int,
    now_ms: int,
) -> None:
    """Record a scheduled retry."""
    await conn.execute(
        retry_history.insert().values(
            attempt_id=attempt_id,
            attempt_no=attempt_no,
            strategy=strategy,
            backoff_ms=backoff_ms,
            max_retries=max_retries,
            scheduled_at_ms=scheduled_at_ms,
            created_at_ms=now_ms,
        )
    )


async def retries(conn: AsyncConnection, attempt_id: str) -> list[dict[str, Any]]:
    """Retry history of an attempt in insertion order."""
    statement = (
        select(retry_history)
        .where(retry_history.c.attempt_id == attempt_id)
        .order_by(retry_history.c.retry_id)
    )
    return [dict(row) for row in (await conn.execute(statement)).mappings()]
