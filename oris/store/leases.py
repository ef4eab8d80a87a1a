"""Queries on leases: the fencing tokens that say which worker may act on an attempt."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import LeaseState
from oris.store.dialect import in_list, is_postgres, row_by_key
from oris.store.records import AttemptRecord, LeaseRecord, dump_json
from oris.store.tables import ACTIVE_LEASE, attempts, jobs, leases


async def get(conn: AsyncConnection, lease_id: str, *, lock: bool = False) -> LeaseRecord | None:
    """One lease by id."""
    statement = row_by_key(leases, "lease_id", lock)
    row = (await conn.execute(statement, {"lease_id": lease_id})).mappings().first()
    return None if row is None else LeaseRecord.from_row(row)


async def lock_with_attempt(
    conn: AsyncConnection, lease_id: str
) -> tuple[LeaseRecord, AttemptRecord] | None:
    """A lease and its attempt, both locked: the attempt first, then the lease (the lock
    order of docs/architecture.md), in one statement."""
    row = (await conn.execute(_LOCK_WITH_ATTEMPT, {"lease_id": lease_id})).mappings().first()
    if row is None:
        return None
    lease = LeaseRecord.from_row({column.name: row[f"l_{column.name}"] for column in leases.c})
    return lease, AttemptRecord.from_row(row)


# ``OF`` lists the tables in lock order: PostgreSQL locks the attempt's row, then the lease's.
_LOCK_WITH_ATTEMPT = (
    select(attempts, *(column.label(f"l_{column.name}") for column in leases.c))
    .join(leases, leases.c.attempt_id == attempts.c.attempt_id)
    .where(leases.c.lease_id == bindparam("lease_id"))
    .with_for_update(of=[attempts, leases])
)


async def active_for_attempt(conn: AsyncConnection, attempt_id: str) -> LeaseRecord | None:
    """The attempt's active lease, if any."""
    statement = select(leases).where(leases.c.attempt_id == attempt_id, ACTIVE_LEASE)
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else LeaseRecord.from_row(row)


async def latest_for_attempt_and_worker(
    conn: AsyncConnection, attempt_id: str, worker_id: str
) -> LeaseRecord | None:
    """The newest lease this worker held on the attempt (for repeated acks)."""
    statement = (
        select(leases)
        .where(leases.c.attempt_id == attempt_id, leases.c.worker_id == worker_id)
        .order_by(leases.c.acquired_at_ms.desc(), leases.c.version.desc())
        .limit(1)
    )
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else LeaseRecord.from_row(row)


async def insert_many(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Create leases (the partial unique index refuses a second active lease per attempt)."""
    if rows:
        await conn.execute(leases.insert(), list(rows))


async def extend(
    conn: AsyncConnection,
    lease: LeaseRecord,
    *,
    now_ms: int,
    expires_at_ms: int,
    settling: bool = False,
) -> bool:
    """Compare-and-set on the lease version: False when someone changed it first.

    ``settling`` marks the lease (once: the first such heartbeat's time is kept) as held for
    an attempt whose outcome is decided, so an ack that never comes is noticed."""
    params = {
        "b_lease_id": lease.lease_id,
        "b_version": lease.version,
        "b_now": now_ms,
        "b_expires": expires_at_ms,
        "b_next_version": lease.version + 1,
    }
    statement = _EXTEND_SETTLING if settling else _EXTEND
    result = await conn.execute(statement, params)
    return bool(result.rowcount)


_EXTEND = (
    update(leases)
    .where(
        leases.c.lease_id == bindparam("b_lease_id"),
        leases.c.version == bindparam("b_version"),
        ACTIVE_LEASE,
    )
    .values(
        heartbeat_at_ms=bindparam("b_now"),
        lease_expires_at_ms=bindparam("b_expires"),
        version=bindparam("b_next_version"),
    )
)
_EXTEND_SETTLING = _EXTEND.values(
    settling_since_ms=func.coalesce(leases.c.settling_since_ms, bindparam("b_now"))
)


async def end_active_lease(
    conn: AsyncConnection, attempt_id: str, state: LeaseState, now_ms: int
) -> bool:
    """End the attempt's active lease (revoked by cancel, expired by maintenance)."""
    result = await conn.execute(
        update(leases)
        .where(leases.c.attempt_id == attempt_id, ACTIVE_LEASE)
        .values(state=state.value, ended_at_ms=now_ms, version=leases.c.version + 1)
    )
    return bool(result.rowcount)


async def release(
    conn: AsyncConnection, lease: LeaseRecord, *, now_ms: int, ack_hash: str, response: Any
) -> bool:
    """Release a lease by its ack, guarded on its version; keeps the ack for repeats."""
    result = await conn.execute(
        update(leases)
        .where(
            leases.c.lease_id == lease.lease_id,
            ACTIVE_LEASE,
            leases.c.version == lease.version,
        )
        .values(
            state=LeaseState.RELEASED.value,
            ended_at_ms=now_ms,
            version=lease.version + 1,
            ack_hash=ack_hash,
            ack_response_json=dump_json(response),
        )
    )
    return bool(result.rowcount)


async def active_counts(
    conn: AsyncConnection, worker_id: str, now_ms: int
) -> tuple[int, dict[str, int]]:
    """Unexpired active leases held by ``worker_id``, and per tenant (all workers), in one query."""
    worker_total = 0
    tenants: dict[str, int] = {}
    result = await conn.execute(_active_counts(), {"worker_id": worker_id, "now": now_ms})
    for is_mine, tenant, count in result.all():
        if is_mine:
            worker_total += int(count)
        if tenant is not None:
            tenants[str(tenant)] = tenants.get(str(tenant), 0) + int(count)
    return worker_total, tenants


@functools.cache
def _active_counts() -> Select[Any]:
    mine = (leases.c.worker_id == bindparam("worker_id")).label("mine")
    return (
        select(mine, leases.c.tenant_id, func.count())
        .where(
            ACTIVE_LEASE,
            leases.c.lease_expires_at_ms >= bindparam("now"),
            or_(leases.c.worker_id == bindparam("worker_id"), leases.c.tenant_id.is_not(None)),
        )
        .group_by(mine, leases.c.tenant_id)
    )


async def lock_active_for_attempts(
    conn: AsyncConnection, attempt_ids: Sequence[str]
) -> dict[str, LeaseRecord]:
    """The active leases of these attempts, row-locked; leases another transaction holds
    (the expiry sweeper) are skipped rather than waited for."""
    statement = _lock_active_for_attempts(is_postgres(conn))
    rows = (await conn.execute(statement, {"attempt_ids": list(attempt_ids)})).mappings()
    return {row["attempt_id"]: LeaseRecord.from_row(row) for row in rows}


@functools.cache
def _lock_active_for_attempts(postgres: bool) -> Select[Any]:
    statement = (
        select(leases)
        .where(in_list(postgres, leases.c.attempt_id, "attempt_ids"), ACTIVE_LEASE)
        .order_by(leases.c.attempt_id)
    )
    return statement.with_for_update(skip_locked=True) if postgres else statement


async def release_many(conn: AsyncConnection, rows: Sequence[dict[str, Any]], now_ms: int) -> None:
    """Release locked leases by their acks: rows of ``b_lease_id``, ``b_version`` (the new
    version), ``b_ack_hash`` and ``b_response`` (JSON text)."""
    if rows:
        statement = (
            update(leases)
            .where(leases.c.lease_id == bindparam("b_lease_id"), ACTIVE_LEASE)
            .values(
                state=LeaseState.RELEASED.value,
                ended_at_ms=now_ms,
                version=bindparam("b_version"),
                ack_hash=bindparam("b_ack_hash"),
                ack_response_json=bindparam("b_response"),
            )
        )
        await conn.execute(statement, list(rows))


async def claim_expired(
    conn: AsyncConnection, *, expired_before_ms: int, limit: int
) -> list[LeaseRecord]:
    """Active leases past their expiry (and grace), locked so only one sweeper takes each.

    On PostgreSQL each lease's job and attempt rows are locked with it, in the lock order
    (job, attempt, lease), all with SKIP LOCKED: the requeue writes all three and so waits
    for no lock another transaction holds."""
    statement = (
        select(leases)
        .where(ACTIVE_LEASE, leases.c.lease_expires_at_ms < expired_before_ms)
        .order_by(leases.c.lease_expires_at_ms)
        .limit(limit)
    )
    if is_postgres(conn):
        statement = (
            statement.join(attempts, attempts.c.attempt_id == leases.c.attempt_id)
            .join(jobs, jobs.c.thread_id == attempts.c.run_id)
            .with_for_update(skip_locked=True, of=[jobs, attempts, leases])
        )
    return [LeaseRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def mark_expired(conn: AsyncConnection, lease: LeaseRecord, now_ms: int) -> bool:
    """Active → expired, guarded on the version the sweeper read."""
    result = await conn.execute(
        update(leases)
        .where(
            leases.c.lease_id == lease.lease_id,
            ACTIVE_LEASE,
            leases.c.version == lease.version,
        )
        .values(state=LeaseState.EXPIRED.value, ended_at_ms=now_ms, version=lease.version + 1)
    )
    return bool(result.rowcount)
