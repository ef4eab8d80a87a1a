"""Queries on schedules. Every change is guarded in its ``WHERE`` clause, so replicas that
handle the same tick at once cannot both advance it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import insert_ignore, is_postgres, row_by_key
from oris.store.records import ScheduleRecord
from oris.store.tables import schedules


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """A new schedule, or False when the id exists."""
    return await insert_ignore(conn, schedules, values)


async def get(
    conn: AsyncConnection, schedule_id: str, *, lock: bool = False
) -> ScheduleRecord | None:
    """One schedule, optionally locked for the rest of the transaction."""
    statement = row_by_key(schedules, "schedule_id", lock and is_postgres(conn))
    row = (await conn.execute(statement, {"schedule_id": schedule_id})).mappings().first()
    return None if row is None else ScheduleRecord.from_row(row)


async def list_page(
    conn: AsyncConnection, *, limit: int, offset: int
) -> tuple[list[ScheduleRecord], int]:
    """Schedules by id, and how many there are."""
    statement = select(schedules).order_by(schedules.c.schedule_id).limit(limit).offset(offset)
    rows = [ScheduleRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]
    total = int((await conn.execute(select(func.count()).select_from(schedules))).scalar_one())
    return rows, total


async def claim_due(conn: AsyncConnection, *, now_ms: int, limit: int) -> list[ScheduleRecord]:
    """Schedules with a tick due, row-locked with SKIP LOCKED on PostgreSQL so that replicas
    sweeping at once each take different ones."""
    statement = (
        select(schedules)
        .where(schedules.c.next_run_at_ms <= now_ms)
        .order_by(schedules.c.next_run_at_ms)
        .limit(limit)
    )
    if is_postgres(conn):
        statement = statement.with_for_update(skip_locked=True)
    return [ScheduleRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def advance(
    conn: AsyncConnection,
    schedule_id: str,
    *,
    expected_next_run_at_ms: int,
    expected_status: str,
    values: dict[str, Any],
) -> bool:
    """Compare-and-set: apply ``values`` only while the schedule still waits for the tick the
    caller read (and has the status it read). False: another replica or an operator won."""
    result = await conn.execute(
        update(schedules)
        .where(
            schedules.c.schedule_id == schedule_id,
            schedules.c.next_run_at_ms == expected_next_run_at_ms,
            schedules.c.status == expected_status,
        )
        .values(**values)
    )
    return bool(result.rowcount)


async def update_schedule(conn: AsyncConnection, schedule_id: str, values: dict[str, Any]) -> bool:
    """Overwrite columns of one schedule; False when it does not exist."""
    result = await conn.execute(
        update(schedules).where(schedules.c.schedule_id == schedule_id).values(**values)
    )
    return bool(result.rowcount)


async def remove(conn: AsyncConnection, schedule_id: str) -> bool:
    """Delete a schedule (its jobs stay); False when it did not exist."""
    result = await conn.execute(delete(schedules).where(schedules.c.schedule_id == schedule_id))
    return bool(result.rowcount)
