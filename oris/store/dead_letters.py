"""Queries on the dead-letter queue and retry history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import ReplayStatus
from oris.store.dialect import in_list, insert_ignore, is_postgres
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
    workflow: str | None = None,
    tenant_id: str | None = None,
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
        "workflow": workflow,
        "tenant_id": tenant_id,
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


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """What a DLQ listing or a bulk replay selects; every field narrows the selection.

    ``workflow`` and ``tenant_id`` are the dead attempt's; the time bounds (exclusive) apply
    to when the entry was dead-lettered."""

    replay_status: str | None = None
    workflow: str | None = None
    tenant_id: str | None = None
    dead_after_ms: int | None = None
    dead_before_ms: int | None = None
    thread_ids: tuple[str, ...] | None = None


def _filtered(postgres: bool, statement: Select[Any], where: DeadLetterFilter) -> Select[Any]:
    d = dead_letters.c
    conditions: list[ColumnElement[bool]] = []
    if where.replay_status is not None:
        conditions.append(d.replay_status == where.replay_status)
    if where.dead_after_ms is not None:
        conditions.append(d.dead_at_ms > where.dead_after_ms)
    if where.dead_before_ms is not None:
        conditions.append(d.dead_at_ms < where.dead_before_ms)
    if where.thread_ids is not None:
        conditions.append(in_list(postgres, d.run_id, "filter_thread_ids"))
    if where.workflow is not None:
        conditions.append(d.workflow == where.workflow)
    if where.tenant_id is not None:
        conditions.append(d.tenant_id == where.tenant_id)
    return statement.where(*conditions) if conditions else statement


def _params(where: DeadLetterFilter) -> dict[str, Any]:
    return {} if where.thread_ids is None else {"filter_thread_ids": list(where.thread_ids)}


async def list_entries(
    conn: AsyncConnection,
    *,
    where: DeadLetterFilter,
    limit: int,
    after: tuple[int, str] | None = None,
) -> list[DeadLetterRecord]:
    """Newest first, ties by attempt id; ``after`` is the (dead_at_ms, attempt id) of the
    previous page's last entry (keyset paging)."""
    d = dead_letters.c
    statement = _filtered(is_postgres(conn), select(dead_letters), where)
    if after is not None:
        statement = statement.where(
            d.dead_at_ms <= after[0], or_(d.dead_at_ms < after[0], d.attempt_id > after[1])
        )
    statement = statement.order_by(d.dead_at_ms.desc(), d.attempt_id).limit(limit)
    rows = (await conn.execute(statement, _params(where))).mappings()
    return [DeadLetterRecord.from_row(row) for row in rows]


async def select_attempt_ids(
    conn: AsyncConnection, *, where: DeadLetterFilter, limit: int
) -> list[str]:
    """The attempt ids a bulk replay selects, oldest dead letter first."""
    d = dead_letters.c
    statement = _filtered(is_postgres(conn), select(d.attempt_id), where)
    statement = statement.order_by(d.dead_at_ms, d.attempt_id).limit(limit)
    return [str(row[0]) for row in (await conn.execute(statement, _params(where))).all()]


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
