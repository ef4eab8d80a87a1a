"""Queries on jobs, attempts, checkpoints, the timeline and idempotency records."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, TextClause, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import insert_ignore, is_postgres, one_of
from oris.store.records import (
    AttemptRecord,
    CheckpointRecord,
    JobRecord,
    LeaseRecord,
    TimelineRecord,
    dump_json,
    load_json,
)
from oris.store.tables import (
    attempts,
    checkpoints,
    idempotency,
    jobs,
    leases,
    timeline_events,
)

_TABLES = {table.name: table for table in (jobs, checkpoints, attempts, timeline_events)}


async def get_job(conn: AsyncConnection, thread_id: str, *, lock: bool = False) -> JobRecord | None:
    """One job, optionally locked for the rest of the transaction."""
    statement = select(jobs).where(jobs.c.thread_id == thread_id)
    if lock:
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else JobRecord.from_row(row)


async def insert_new_run(
    conn: AsyncConnection,
    *,
    job: dict[str, Any],
    checkpoint: dict[str, Any],
    attempt: dict[str, Any],
    events: Sequence[dict[str, Any]],
) -> bool:
    """A new thread: its job, start checkpoint, first attempt and timeline events, or nothing
    when the thread id exists (False). One statement on PostgreSQL."""
    if not is_postgres(conn):
        if not await insert_ignore(conn, jobs, job):
            return False
        await conn.execute(checkpoints.insert().values(**checkpoint))
        await conn.execute(attempts.insert().values(**attempt))
        await add_events(conn, events)
        return True
    rows = [(jobs, job), (checkpoints, checkpoint), (attempts, attempt)]
    rows += [(timeline_events, row) for row in event_rows(events)]
    statement = _new_run_statement(tuple((table.name, tuple(row)) for table, row in rows))
    params = {
        f"p{index}_{column}": value
        for index, (_, row) in enumerate(rows)
        for column, value in row.items()
    }
    return bool((await conn.execute(statement, params)).scalar_one())


@functools.lru_cache(maxsize=64)
def _new_run_statement(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> TextClause:
    """The PostgreSQL statement of :func:`insert_new_run` for rows with these columns.

    Built as text once per shape (a run's rows always have the same columns): composing it as
    a SQLAlchemy expression cost more CPU per submit than everything else a submit does.
    The job row is inserted ``ON CONFLICT DO NOTHING``; every other row is selected from its
    ``RETURNING``, so nothing is written when the thread exists.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def values(index: int, table_name: str, columns: tuple[str, ...]) -> str:
        table = _TABLES[table_name]
        return ", ".join(
            f"CAST(:p{index}_{column} AS {table.c[column].type.compile(dialect=dialect)})"
            for column in columns
        )

    (job_table, job_columns), *following = shape
    parts = [
        f"new_job AS (INSERT INTO {job_table} ({', '.join(job_columns)}) "
        f"VALUES ({values(0, job_table, job_columns)}) "
        "ON CONFLICT DO NOTHING RETURNING thread_id)"
    ]
    for index, (table_name, columns) in enumerate(following, start=1):
        parts.append(
            f"new_{index} AS (INSERT INTO {table_name} ({', '.join(columns)}) "
            f"SELECT {values(index, table_name, columns)} FROM new_job RETURNING 1)"
        )
    return text(f"WITH {', '.join(parts)} SELECT count(*) FROM new_job")


def new_checkpoint_id() -> str:
    """A checkpoint id."""
    return f"cp-{uuid.uuid4().hex}"


async def update_job(conn: AsyncConnection, thread_id: str, values: dict[str, Any]) -> None:
    """Overwrite columns of one job."""
    await conn.execute(update(jobs).where(jobs.c.thread_id == thread_id).values(**values))


async def list_jobs(
    conn: AsyncConnection, *, status: str | None, limit: int, offset: int
) -> list[JobRecord]:
    """Jobs, most recently updated first."""
    statement = select(jobs).order_by(jobs.c.updated_at_ms.desc(), jobs.c.thread_id)
    if status is not None:
        statement = statement.where(jobs.c.status == status)
    rows = (await conn.execute(statement.limit(limit).offset(offset))).mappings()
    return [JobRecord.from_row(row) for row in rows]


async def count_jobs(conn: AsyncConnection, *, status: str | None) -> int:
    """How many jobs match the filter."""
    statement = select(func.count()).select_from(jobs)
    if status is not None:
        statement = statement.where(jobs.c.status == status)
    return int((await conn.execute(statement)).scalar_one())


def new_attempt_id(thread_id: str) -> str:
    """Attempt ids keep upstream's shape: ``attempt-<thread_id>-<uuid>``."""
    return f"attempt-{thread_id}-{uuid.uuid4()}"


async def insert_attempt(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Create an attempt row."""
    await conn.execute(attempts.insert().values(**values))


async def get_attempt(
    conn: AsyncConnection, attempt_id: str, *, lock: bool = False
) -> AttemptRecord | None:
    """One attempt, optionally locked."""
    statement = select(attempts).where(attempts.c.attempt_id == attempt_id)
    if lock:
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else AttemptRecord.from_row(row)


async def get_attempts(
    conn: AsyncConnection, attempt_ids: Sequence[str], *, lock: bool = False
) -> dict[str, AttemptRecord]:
    """Attempts by id (missing ids are absent), locked in id order so batches cannot deadlock."""
    statement = (
        select(attempts)
        .where(one_of(conn, attempts.c.attempt_id, attempt_ids))
        .order_by(attempts.c.attempt_id)
    )
    if lock:
        statement = statement.with_for_update()
    rows = (await conn.execute(statement)).mappings()
    return {row["attempt_id"]: AttemptRecord.from_row(row) for row in rows}


async def update_attempts(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], values: dict[str, Any]
) -> None:
    """One statement for many attempts: each row holds ``b_attempt_id`` and the ``values``'
    bind parameters (``bindparam("b_...")``) that differ per attempt."""
    if rows:
        statement = (
            update(attempts)
            .where(attempts.c.attempt_id == bindparam("b_attempt_id"))
            .values(**values)
        )
        await conn.execute(statement, list(rows))


async def update_jobs(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], values: dict[str, Any]
) -> None:
    """One statement for many jobs: each row holds ``b_thread_id`` and the per-job binds."""
    if rows:
        statement = (
            update(jobs).where(jobs.c.thread_id == bindparam("b_thread_id")).values(**values)
        )
        await conn.execute(statement, list(rows))


async def list_attempts(conn: AsyncConnection, thread_id: str) -> list[AttemptRecord]:
    """Every attempt of a thread, oldest first."""
    statement = select(attempts).where(attempts.c.run_id == thread_id).order_by(attempts.c.seq)
    return [AttemptRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def update_attempt(
    conn: AsyncConnection,
    attempt_id: str,
    values: dict[str, Any],
    *,
    expected_statuses: Iterable[str] | None = None,
) -> bool:
    """Guarded update: only applies while the attempt is in one of ``expected_statuses``."""
    statement = update(attempts).where(attempts.c.attempt_id == attempt_id)
    if expected_statuses is not None:
        statement = statement.where(attempts.c.status.in_(list(expected_statuses)))
    result = await conn.execute(statement.values(**values))
    return bool(result.rowcount)


async def leases_for_attempts(
    conn: AsyncConnection, attempt_ids: Sequence[str]
) -> list[LeaseRecord]:
    """Every lease ever granted on the given attempts, oldest first."""
    if not attempt_ids:
        return []
    statement = (
        select(leases)
        .where(one_of(conn, leases.c.attempt_id, attempt_ids))
        .order_by(leases.c.acquired_at_ms, leases.c.lease_id)
    )
    return [LeaseRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def insert_checkpoint(
    conn: AsyncConnection,
    *,
    thread_id: str,
    attempt_id: str | None,
    step: str | None,
    state: Any,
    now_ms: int,
) -> CheckpointRecord:
    """Append a checkpoint to a thread; ``seq`` counts checkpoints of the thread from 0."""
    current = await conn.execute(
        select(func.max(checkpoints.c.seq)).where(checkpoints.c.thread_id == thread_id)
    )
    top = current.scalar()
    seq = 0 if top is None else int(top) + 1
    record = CheckpointRecord(
        checkpoint_id=new_checkpoint_id(),
        thread_id=thread_id,
        attempt_id=attempt_id,
        seq=seq,
        step=step,
        state=state,
        created_at_ms=now_ms,
    )
    await conn.execute(
        checkpoints.insert().values(
            checkpoint_id=record.checkpoint_id,
            thread_id=thread_id,
            attempt_id=attempt_id,
            seq=seq,
            step=step,
            state_json=dump_json(state),
            created_at_ms=now_ms,
        )
    )
    return record


async def get_checkpoint(
    conn: AsyncConnection, thread_id: str, checkpoint_id: str
) -> CheckpointRecord | None:
    """One checkpoint of a thread."""
    statement = select(checkpoints).where(
        checkpoints.c.thread_id == thread_id, checkpoints.c.checkpoint_id == checkpoint_id
    )
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else CheckpointRecord.from_row(row)


async def latest_checkpoint(
    conn: AsyncConnection, thread_id: str, *, attempt_id: str | None = None
) -> CheckpointRecord | None:
    """The newest checkpoint of a thread, or of one attempt of it."""
    statement = select(checkpoints).where(checkpoints.c.thread_id == thread_id)
    if attempt_id is not None:
        statement = statement.where(checkpoints.c.attempt_id == attempt_id)
    statement = statement.order_by(checkpoints.c.seq.desc()).limit(1)
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else CheckpointRecord.from_row(row)


async def mark_running_many(
    conn: AsyncConnection, thread_ids: Sequence[str], now_ms: int
) -> dict[str, Any]:
    """Jobs → running (their attempts were leased); returns each job's input by thread id."""
    if not thread_ids:
        return {}
    result = await conn.execute(
        update(jobs)
        .where(one_of(conn, jobs.c.thread_id, thread_ids))
        .values(status="running", updated_at_ms=now_ms)
        .returning(jobs.c.thread_id, jobs.c.input_json)
    )
    return {thread_id: None if raw is None else load_json(raw) for thread_id, raw in result.all()}


async def resume_checkpoints(
    conn: AsyncConnection, wanted: Sequence[AttemptRecord]
) -> dict[str, CheckpointRecord]:
    """Where each attempt starts, by attempt id: its own newest checkpoint, else its start
    checkpoint (an attempt's own checkpoints always have a higher ``seq``). One query."""
    if not wanted:
        return {}
    attempt_ids = [attempt.attempt_id for attempt in wanted]
    starts = {a.start_checkpoint_id for a in wanted if a.start_checkpoint_id is not None}
    condition: ColumnElement[bool] = one_of(conn, checkpoints.c.attempt_id, attempt_ids)
    if starts:
        condition = or_(condition, one_of(conn, checkpoints.c.checkpoint_id, sorted(starts)))
    statement = select(checkpoints).where(
        one_of(conn, checkpoints.c.thread_id, sorted({a.run_id for a in wanted})), condition
    )
    found = [CheckpointRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]
    chosen: dict[str, CheckpointRecord] = {}
    for attempt in wanted:
        mine = [
            c
            for c in found
            if c.thread_id == attempt.run_id
            and (
                c.attempt_id == attempt.attempt_id or c.checkpoint_id == attempt.start_checkpoint_id
            )
        ]
        if mine:
            chosen[attempt.attempt_id] = max(mine, key=lambda c: c.seq)
    return chosen


async def list_checkpoints(conn: AsyncConnection, thread_id: str) -> list[CheckpointRecord]:
    """Every checkpoint of a thread, oldest first."""
    statement = (
        select(checkpoints).where(checkpoints.c.thread_id == thread_id).order_by(checkpoints.c.seq)
    )
    return [CheckpointRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


def event_rows(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timeline rows from dicts with ``thread_id``, ``event_type``, ``now_ms`` and optionally
    ``attempt_id``, ``checkpoint_id``, ``details``."""
    return [
        {
            "thread_id": event["thread_id"],
            "attempt_id": event.get("attempt_id"),
            "event_type": event["event_type"],
            "checkpoint_id": event.get("checkpoint_id"),
            "details_json": None if event.get("details") is None else dump_json(event["details"]),
            "created_at_ms": event["now_ms"],
        }
        for event in events
    ]


async def add_events(conn: AsyncConnection, events: Sequence[dict[str, Any]]) -> None:
    """Append timeline events (see :func:`event_rows`) in one statement."""
    if events:
        await conn.execute(timeline_events.insert(), event_rows(events))


async def list_events(conn: AsyncConnection, thread_id: str) -> list[TimelineRecord]:
    """A thread's timeline in order."""
    statement = (
        select(timeline_events)
        .where(timeline_events.c.thread_id == thread_id)
        .order_by(timeline_events.c.event_id)
    )
    return [TimelineRecord.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def reserve_idempotency_key(
    conn: AsyncConnection,
    *,
    key: str,
    operation: str,
    thread_id: str,
    payload_hash: str,
    now_ms: int,
) -> tuple[str, str, str, Any] | None:
    """Claim a key for this transaction, or return the stored (operation, thread, hash, response).

    The insert takes the key's unique-index lock, so concurrent requests with one key queue
    behind the first and then see its committed record.
    """
    inserted = await insert_ignore(
        conn,
        idempotency,
        {
            "idempotency_key": key,
            "operation": operation,
            "thread_id": thread_id,
            "payload_hash": payload_hash,
            "response_json": "null",
            "created_at_ms": now_ms,
        },
    )
    if inserted:
        return None
    row = (
        (await conn.execute(select(idempotency).where(idempotency.c.idempotency_key == key)))
        .mappings()
        .one()
    )
    return (
        row["operation"],
        row["thread_id"],
        row["payload_hash"],
        load_json(row["response_json"]),
    )


async def store_idempotent_response(conn: AsyncConnection, key: str, response: Any) -> None:
    """Record the response a reserved key replays."""
    await conn.execute(
        update(idempotency)
        .where(idempotency.c.idempotency_key == key)
        .values(response_json=dump_json(response))
    )
