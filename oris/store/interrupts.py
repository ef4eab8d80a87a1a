"""Queries on human-approval interrupts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import InterruptStatus
from oris.store.records import InterruptRecord, dump_json
from oris.store.tables import interrupts


async def insert(
    conn: AsyncConnection,
    *,
    thread_id: str,
    attempt_id: str,
    step: str | None,
    value: Any,
    now_ms: int,
) -> InterruptRecord:
    """Open a pending interrupt; ids are unique per interrupt (G10)."""
    interrupt_id = f"int-{thread_id}-{uuid.uuid4().hex[:12]}"
    await conn.execute(
        interrupts.insert().values(
            interrupt_id=interrupt_id,
            thread_id=thread_id,
            run_id=thread_id,
            attempt_id=attempt_id,
            step=step,
            value_json=dump_json(value),
            status=InterruptStatus.PENDING.value,
            created_at_ms=now_ms,
        )
    )
    found = await get(conn, interrupt_id)
    assert found is not None
    return found


async def get(
    conn: AsyncConnection, interrupt_id: str, *, lock: bool = False
) -> InterruptRecord | None:
    """One interrupt."""
    statement = select(interrupts).where(interrupts.c.interrupt_id == interrupt_id)
    if lock:
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else InterruptRecord.from_row(row)


async def list_interrupts(
    conn: AsyncConnection, *, status: str | None, run_id: str | None, limit: int
) -> list[InterruptRecord]:
    """Newest first."""
    statement = select(interrupts).order_by(
        interrupts.c.created_at_ms.desc(), interrupts.c.interrupt_id
    )
    if status is not None:
        statement = statement.where(interrupts.c.status == status)
    if run_id is not None:
        statement = statement.where(interrupts.c.run_id == run_id)
    rows = (await conn.execute(statement.limit(limit))).mappings()
    return [InterruptRecord.from_row(row) for row in rows]


async def pending_for_thread(conn: AsyncConnection, thread_id: str) -> InterruptRecord | None:
    """The newest pending interrupt of a thread."""
    statement = (
        select(interrupts)
        .where(
            interrupts.c.thread_id == thread_id,
            interrupts.c.status == InterruptStatus.PENDING.value,
        )
        .order_by(interrupts.c.created_at_ms.desc())
        .limit(1)
    )
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else InterruptRecord.from_row(row)


async def close_pending(conn: AsyncConnection, thread_id: str, status: InterruptStatus) -> None:
    """Close every pending interrupt of a thread (the job was cancelled)."""
    await conn.execute(
        update(interrupts)
        .where(
            interrupts.c.thread_id == thread_id,
            interrupts.c.status == InterruptStatus.PENDING.value,
        )
        .values(status=status.value)
    )


async def mark_resumed(
    conn: AsyncConnection, interrupt_id: str, *, payload_hash: str, response: Any, now_ms: int
) -> bool:
    """Pending → resumed, guarded; False when it was no longer pending."""
    result = await conn.execute(
        update(interrupts)
        .where(
            interrupts.c.interrupt_id == interrupt_id,
            interrupts.c.status == InterruptStatus.PENDING.value,
        )
        .values(
            status=InterruptStatus.RESUMED.value,
            resume_payload_hash=payload_hash,
            resume_response_json=dump_json(response),
            resumed_at_ms=now_ms,
        )
    )
    return bool(result.rowcount)


async def mark_rejected(conn: AsyncConnection, interrupt_id: str, reason: str | None) -> bool:
    """Pending → rejected, guarded."""
    result = await conn.execute(
        update(interrupts)
        .where(
            interrupts.c.interrupt_id == interrupt_id,
            interrupts.c.status == InterruptStatus.PENDING.value,
        )
        .values(status=InterruptStatus.REJECTED.value, reject_reason=reason)
    )
    return bool(result.rowcount)
