"""Scrape-time reads: the gauges every replica reports identically, and database health."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import InterruptStatus
from oris.store.dialect import is_postgres
from oris.store.tables import ACTIVE_LEASE, interrupts, leases


async def ping(conn: AsyncConnection) -> None:
    """One round trip."""
    await conn.execute(text("SELECT 1"))


_ONE_CORE = text("SET LOCAL max_parallel_workers_per_gather = 0")


async def on_one_core(conn: AsyncConnection) -> None:
    """For the rest of this transaction, PostgreSQL plans without parallel workers: a
    background count then takes one core for longer instead of every core at once."""
    if is_postgres(conn):
        await conn.execute(_ONE_CORE)


async def interrupts_pending(conn: AsyncConnection) -> int:
    """Interrupts waiting for a decision."""
    statement = select(func.count()).where(interrupts.c.status == InterruptStatus.PENDING.value)
    return int((await conn.execute(statement)).scalar_one())


async def stale_leases(conn: AsyncConnection, now_ms: int) -> int:
    """Active leases past their expiry."""
    statement = select(func.count()).where(ACTIVE_LEASE, leases.c.lease_expires_at_ms < now_ms)
    return int((await conn.execute(statement)).scalar_one())


async def active_leases_by(conn: AsyncConnection, column: str, now_ms: int) -> dict[str, int]:
    """Unexpired active leases grouped by ``worker_id`` or ``tenant_id``."""
    key = leases.c[column]
    statement = (
        select(key, func.count())
        .where(
            ACTIVE_LEASE,
            leases.c.lease_expires_at_ms >= now_ms,
            key.is_not(None),
        )
        .group_by(key)
    )
    return {str(k): int(n) for k, n in (await conn.execute(statement)).all()}


async def postgres_table_health(conn: AsyncConnection) -> tuple[dict[str, int], float | None]:
    """Dead tuples per runtime table and the oldest open transaction's age (PostgreSQL only)."""
    if not is_postgres(conn):
        return {}, None
    dead = await conn.execute(
        text(
            "SELECT relname, n_dead_tup FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname LIKE 'runtime_%'"
        )
    )
    oldest = await conn.execute(
        text(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(now() - xact_start)), 0) "
            "FROM pg_stat_activity WHERE xact_start IS NOT NULL AND datname = current_database()"
        )
    )
    return {str(name): int(count) for name, count in dead.all()}, float(oldest.scalar() or 0.0)


async def table_sizes(conn: AsyncConnection) -> tuple[dict[str, int], int]:
    """PostgreSQL: bytes per runtime table (with indexes and TOAST) and their sum. SQLite: no
    per-table sizes (they need the optional ``dbstat`` table, which reads every page of the
    file), only the file's size from its page count."""
    if not is_postgres(conn):
        pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
        page_size = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
        return {}, int(pages) * int(page_size)
    rows = await conn.execute(
        text(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname LIKE 'runtime_%'"
        )
    )
    sizes = {str(name): int(size) for name, size in rows.all()}
    return sizes, sum(sizes.values())


async def unacked_settled(
    conn: AsyncConnection, *, now_ms: int, marked_before_ms: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """Live leases whose holder said the outcome was decided before ``marked_before_ms`` and
    that no ack has released since: how many, and the oldest ``limit`` of them."""
    where = (
        ACTIVE_LEASE,
        leases.c.lease_expires_at_ms >= now_ms,
        leases.c.settling_since_ms.is_not(None),
        leases.c.settling_since_ms <= marked_before_ms,
    )
    count = int((await conn.execute(select(func.count()).where(*where))).scalar_one())
    if count == 0 or limit <= 0:
        return count, []
    rows = await conn.execute(
        select(
            leases.c.attempt_id,
            leases.c.lease_id,
            leases.c.worker_id,
            leases.c.settling_since_ms,
            leases.c.heartbeat_at_ms,
            leases.c.version,
        )
        .where(*where)
        .order_by(leases.c.settling_since_ms, leases.c.lease_id)
        .limit(limit)
    )
    return count, [dict(row) for row in rows.mappings().all()]
