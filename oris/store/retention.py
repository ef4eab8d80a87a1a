"""Purging finished jobs with every row that belongs to them.

A job's rows live in two families: rows keyed by its thread id, and rows keyed by one of its
attempts. No foreign keys tie them together, so the purge names every table here; a table
added for jobs must be added to ``THREAD_TABLES`` or ``ATTEMPT_TABLES`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import JobStatus, ReplayStatus
from oris.store.dialect import in_list, is_postgres
from oris.store.tables import (
    attempts,
    checkpoints,
    dead_letters,
    idempotency,
    interrupts,
    jobs,
    leases,
    replay_effects,
    retry_history,
    step_reports,
    timeline_events,
)

# Only these statuses are ever purged; any other (queued, running, interrupted, scheduled or a
# status this code does not know) is live work.
PURGEABLE_STATUSES: frozenset[str] = frozenset(
    {JobStatus.COMPLETED.value, JobStatus.CANCELLED.value, JobStatus.FAILED.value}
)

# (table, the column holding the thread id), besides the job row itself.
THREAD_TABLES: tuple[tuple[Table, Column[Any]], ...] = (
    (attempts, attempts.c.run_id),
    (checkpoints, checkpoints.c.thread_id),
    (timeline_events, timeline_events.c.thread_id),
    (interrupts, interrupts.c.thread_id),
    (replay_effects, replay_effects.c.thread_id),
    (idempotency, idempotency.c.thread_id),
)
# (table, the column holding an attempt id of the job).
ATTEMPT_TABLES: tuple[tuple[Table, Column[Any]], ...] = (
    (leases, leases.c.attempt_id),
    (step_reports, step_reports.c.attempt_id),
    (retry_history, retry_history.c.attempt_id),
    (dead_letters, dead_letters.c.attempt_id),
)
_ORDER: dict[str, tuple[Column[Any], ...]] = {
    attempts.name: (attempts.c.seq,),
    checkpoints.name: (checkpoints.c.seq,),
    timeline_events.name: (timeline_events.c.event_id,),
    interrupts.name: (interrupts.c.created_at_ms, interrupts.c.interrupt_id),
    replay_effects.name: (replay_effects.c.created_at_ms, replay_effects.c.fingerprint),
    idempotency.name: (idempotency.c.created_at_ms, idempotency.c.idempotency_key),
    leases.name: (leases.c.acquired_at_ms, leases.c.lease_id),
    step_reports.name: (step_reports.c.report_id,),
    retry_history.name: (retry_history.c.retry_id,),
    dead_letters.name: (dead_letters.c.attempt_id,),
}


def _pending_dead_letter() -> ColumnElement[bool]:
    """The job has an attempt waiting in the DLQ (index-backed: attempts by run, DLQ by id)."""
    return exists(
        select(1)
        .select_from(
            attempts.join(dead_letters, dead_letters.c.attempt_id == attempts.c.attempt_id)
        )
        .where(
            attempts.c.run_id == jobs.c.thread_id,
            dead_letters.c.replay_status == ReplayStatus.PENDING.value,
        )
    )


def _expired(
    postgres: bool, status: str, cutoff_ms: int | None, with_ids: bool
) -> list[ColumnElement[bool]]:
    if status not in PURGEABLE_STATUSES:
        raise ValueError(f"status {status!r} is never purged")
    conditions = [jobs.c.status == status]
    if cutoff_ms is not None:
        conditions.append(jobs.c.updated_at_ms < cutoff_ms)
    if status == JobStatus.FAILED.value:
        # A dead letter still waiting for a decision keeps its job, however old.
        conditions.append(~_pending_dead_letter())
    if with_ids:
        conditions.append(in_list(postgres, jobs.c.thread_id, "thread_ids"))
    return conditions


async def expired_jobs(
    conn: AsyncConnection,
    *,
    status: str,
    cutoff_ms: int,
    limit: int,
    thread_ids: Sequence[str] | None = None,
    lock: bool = False,
) -> list[str]:
    """Thread ids of jobs in ``status`` last changed before ``cutoff_ms``, oldest first,
    read from the (status, updated_at_ms) index. With ``lock`` (PostgreSQL), the rows are
    locked and rows another transaction holds are skipped, so replicas purging at once take
    disjoint batches."""
    postgres = is_postgres(conn)
    statement = (
        select(jobs.c.thread_id)
        .where(*_expired(postgres, status, cutoff_ms, thread_ids is not None))
        .order_by(jobs.c.updated_at_ms)
        .limit(limit)
    )
    if lock and postgres:
        statement = statement.with_for_update(skip_locked=True, of=jobs)
    params = {} if thread_ids is None else {"thread_ids": list(thread_ids)}
    return [str(row[0]) for row in (await conn.execute(statement, params)).all()]


async def count_expired(conn: AsyncConnection, *, status: str, cutoff_ms: int) -> int:
    """How many jobs :func:`expired_jobs` would find without a limit."""
    statement = select(func.count()).where(*_expired(is_postgres(conn), status, cutoff_ms, False))
    return int((await conn.execute(statement)).scalar_one())


async def oldest_purgeable_ms(conn: AsyncConnection, status: str) -> int | None:
    """When the oldest job retention could purge in ``status`` finished (None: there is none);
    the first entry of the (status, updated_at_ms) index."""
    statement = (
        select(jobs.c.updated_at_ms)
        .where(*_expired(is_postgres(conn), status, None, False))
        .order_by(jobs.c.updated_at_ms)
        .limit(1)
    )
    value = (await conn.execute(statement)).scalar()
    return None if value is None else int(value)


def _row(row: Any) -> dict[str, Any]:
    return {str(key): row[key] for key in row.keys()}  # noqa: SIM118 (a RowMapping)


async def export_rows(
    conn: AsyncConnection, thread_ids: Sequence[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every row of each job, by thread id and then table name, as stored (JSON columns stay
    JSON text), in each table's natural order."""
    if not thread_ids:
        return {}
    postgres = is_postgres(conn)
    params = {"thread_ids": list(thread_ids)}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {
        thread_id: {str(jobs.name): []} for thread_id in thread_ids
    }
    job_rows = await conn.execute(
        select(jobs).where(in_list(postgres, jobs.c.thread_id, "thread_ids")), params
    )
    for row in job_rows.mappings():
        out[row["thread_id"]][str(jobs.name)].append(_row(row))
    owner: dict[str, str] = {}
    for table, column in THREAD_TABLES:
        statement = (
            select(table)
            .where(in_list(postgres, column, "thread_ids"))
            .order_by(*_ORDER[table.name])
        )
        for row in (await conn.execute(statement, params)).mappings():
            thread_id = row[column.name]
            out[thread_id].setdefault(str(table.name), []).append(_row(row))
            if table is attempts:
                owner[row["attempt_id"]] = thread_id
    for table, column in ATTEMPT_TABLES:
        statement = (
            select(table)
            .where(in_list(postgres, column, "attempt_ids"))
            .order_by(*_ORDER[table.name])
        )
        for chunk in _chunks(sorted(owner)):
            for row in (await conn.execute(statement, {"attempt_ids": chunk})).mappings():
                thread_id = owner[row[column.name]]
                out[thread_id].setdefault(str(table.name), []).append(_row(row))
    return out


# Attempt ids go to the attempt-keyed tables as explicit lists, not as a subquery: with one,
# PostgreSQL would hash-join a sequential scan of the whole table against a batch's attempts.
_ATTEMPT_CHUNK = 500


def _chunks(values: Sequence[str]) -> list[list[str]]:
    return [list(values[i : i + _ATTEMPT_CHUNK]) for i in range(0, len(values), _ATTEMPT_CHUNK)]


async def delete_jobs(
    conn: AsyncConnection, *, thread_ids: Sequence[str], status: str, cutoff_ms: int
) -> list[str]:
    """Delete the named jobs that still match (status, age, no pending dead letter) with
    every row that belongs to them; returns the thread ids deleted. The guard is in the
    ``WHERE`` clause: a job replayed since it was chosen is not touched."""
    if not thread_ids:
        return []
    postgres = is_postgres(conn)
    result = await conn.execute(
        delete(jobs)
        .where(*_expired(postgres, status, cutoff_ms, True))
        .returning(jobs.c.thread_id),
        {"thread_ids": list(thread_ids)},
    )
    deleted = [str(row[0]) for row in result.all()]
    if not deleted:
        return []
    params = {"thread_ids": deleted}
    # The row lock order: the job rows (deleted above), then their attempts in id order,
    # then the leases and the other attempt-keyed rows, so a late heartbeat (attempt, then
    # lease) waits for this purge instead of deadlocking with it.
    found = await conn.execute(
        select(attempts.c.attempt_id)
        .where(in_list(postgres, attempts.c.run_id, "thread_ids"))
        .order_by(attempts.c.attempt_id)
        .with_for_update(),
        params,
    )
    attempt_ids = sorted(str(row[0]) for row in found.all())
    for table, column in ATTEMPT_TABLES:
        statement = delete(table).where(in_list(postgres, column, "attempt_ids"))
        for chunk in _chunks(attempt_ids):
            await conn.execute(statement, {"attempt_ids": chunk})
    for table, column in THREAD_TABLES:
        await conn.execute(delete(table).where(in_list(postgres, column, "thread_ids")), params)
    return deleted
