"""The dispatch queries: which attempts a poll may claim, and the queue's depth."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import in_list, is_postgres
from oris.store.records import AttemptRecord
from oris.store.tables import (
    ACTIVE_LEASE,
    DISPATCHABLE_ATTEMPT,
    RUNNING_ATTEMPT,
    attempts,
    jobs,
    leases,
)

RESERVED_WORKFLOW_PREFIX = "oris."


def _workflow_filter(workflows: Collection[str] | None) -> ColumnElement[bool]:
    """Only the workflows a poll names; without a list, anything but reserved ``oris.*`` ones
    (so ``oris smoke`` jobs never reach a worker that did not ask for them)."""
    if workflows is not None:
        return attempts.c.workflow.in_(list(workflows))
    return attempts.c.workflow.not_like(f"{RESERVED_WORKFLOW_PREFIX}%")


async def claim_candidates(
    conn: AsyncConnection,
    *,
    now_ms: int,
    limit: int,
    workflows: Collection[str] | None,
    excluded_tenants: Collection[str],
) -> list[AttemptRecord]:
    """Dispatchable attempts in dispatch order, row-locked with SKIP LOCKED on PostgreSQL:
    each attempt's job row first, then the attempt (the runtime's lock order), so that the
    poll, which then writes both, never waits for a lock another transaction holds.

    Order: priority (high first), then the time the attempt became available (enqueue time,
    or a retry's due time), then enqueue sequence, so equal-priority work is FIFO (G9).
    Tenants already at their cap are excluded in SQL, so they never block others (G6).
    """
    params: dict[str, Any] = {"now": now_ms, "limit": limit}
    if workflows is not None:
        params["workflows"] = list(workflows)
    if excluded_tenants:
        params["excluded"] = list(excluded_tenants)
    statement = _claim_candidates(is_postgres(conn), workflows is not None, bool(excluded_tenants))
    result = await conn.execute(statement, params)
    return [AttemptRecord.from_row(row) for row in result.mappings()]


@functools.cache
def _claim_candidates(postgres: bool, by_workflow: bool, excluding: bool) -> Select[Any]:
    statement = select(attempts)
    if postgres:
        statement = statement.join(jobs, jobs.c.thread_id == attempts.c.run_id)
    statement = (
        statement.where(DISPATCHABLE_ATTEMPT, attempts.c.available_at_ms <= bindparam("now"))
        .order_by(attempts.c.priority.desc(), attempts.c.available_at_ms, attempts.c.seq)
        .limit(bindparam("limit"))
    )
    if by_workflow:
        statement = statement.where(in_list(postgres, attempts.c.workflow, "workflows"))
    else:
        statement = statement.where(_workflow_filter(None))
    if excluding:
        statement = statement.where(
            or_(
                attempts.c.tenant_id.is_(None), ~in_list(postgres, attempts.c.tenant_id, "excluded")
            )
        )
    # ``OF`` lists the tables in lock order: PostgreSQL locks each row's job, then its attempt.
    return (
        statement.with_for_update(skip_locked=True, of=[jobs, attempts]) if postgres else statement
    )


async def first_waiting_tenant(
    conn: AsyncConnection,
    *,
    now_ms: int,
    tenants: Collection[str],
    workflows: Collection[str] | None,
) -> str | None:
    """The first tenant, in dispatch order, that has dispatchable work but is throttled."""
    if not tenants:
        return None
    statement = (
        select(attempts.c.tenant_id)
        .where(
            DISPATCHABLE_ATTEMPT,
            attempts.c.available_at_ms <= now_ms,
            attempts.c.tenant_id.in_(list(tenants)),
        )
        .order_by(attempts.c.priority.desc(), attempts.c.available_at_ms, attempts.c.seq)
        .limit(1)
    )
    statement = statement.where(_workflow_filter(workflows))
    value = (await conn.execute(statement)).scalar()
    return None if value is None else str(value)


async def queue_depth(conn: AsyncConnection, now_ms: int) -> int:
    """Dispatchable attempts, counting those stuck behind an expired lease (G7)."""
    ready = select(func.count()).where(DISPATCHABLE_ATTEMPT, attempts.c.available_at_ms <= now_ms)
    stuck = (
        select(func.count())
        .select_from(leases)
        .where(and_(ACTIVE_LEASE, leases.c.lease_expires_at_ms < now_ms))
    )
    ready_count = int((await conn.execute(ready)).scalar_one())
    stuck_count = int((await conn.execute(stuck)).scalar_one())
    return ready_count + stuck_count


async def attempts_by_status(conn: AsyncConnection) -> dict[str, int]:
    """Attempt counts per status."""
    statement = select(attempts.c.status, func.count()).group_by(attempts.c.status)
    return {str(status): int(count) for status, count in (await conn.execute(statement)).all()}


async def timed_out(conn: AsyncConnection, *, now_ms: int, limit: int) -> list[AttemptRecord]:
    """Leased attempts whose execution timeout, counted from the current lease, has elapsed;
    on PostgreSQL with their job rows, both locked (job first) with SKIP LOCKED."""
    postgres = is_postgres(conn)
    statement = select(attempts)
    if postgres:
        statement = statement.join(jobs, jobs.c.thread_id == attempts.c.run_id)
    statement = statement.where(
        attempts.c.execution_timeout_ms.is_not(None),
        RUNNING_ATTEMPT,
        attempts.c.started_at_ms + attempts.c.execution_timeout_ms <= now_ms,
    ).limit(limit)
    if postgres:
        statement = statement.with_for_update(skip_locked=True, of=[jobs, attempts])
    return [AttemptRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]
