"""Queries on jobs, attempts, checkpoints, the timeline and idempotency records."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    TextClause,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate, Update

from oris.store.audit import AuditEntry
from oris.store.audit import append_params as audit_append_params
from oris.store.audit import append_sql as audit_append_sql
from oris.store.dialect import in_list, insert_ignore, is_postgres, pg_cast_type, row_by_key
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
    inline,
    jobs,
    leases,
    timeline_events,
)

_TABLES = {table.name: table for table in (jobs, checkpoints, attempts, timeline_events)}


async def get_job(conn: AsyncConnection, thread_id: str, *, lock: bool = False) -> JobRecord | None:
    """One job, optionally locked for the rest of the transaction."""
    statement = row_by_key(jobs, "thread_id", lock)
    row = (await conn.execute(statement, {"thread_id": thread_id})).mappings().first()
    return None if row is None else JobRecord.from_row(row)


async def insert_new_run(
    conn: AsyncConnection,
    *,
    job: dict[str, Any],
    checkpoint: dict[str, Any],
    attempt: dict[str, Any],
    events: Sequence[dict[str, Any]],
    notify_channel: str | None = None,
    audit: AuditEntry | None = None,
) -> bool:
    """A new thread: its job, start checkpoint, first attempt and timeline events, or nothing
    when the thread id exists (False). One statement on PostgreSQL, which also sends
    ``NOTIFY notify_channel`` when it creates the thread and a channel is given, and appends
    ``audit`` to the audit chain (PostgreSQL only; the chain lock is then held to the commit)."""
    if not is_postgres(conn):
        if audit is not None:
            raise ValueError("the audit row joins the new-run statement on PostgreSQL only")
        if not await insert_ignore(conn, jobs, job):
            return False
        await conn.execute(checkpoints.insert().values(**checkpoint))
        await conn.execute(attempts.insert().values(**attempt))
        await add_events(conn, events)
        return True
    rows = [(jobs, job), (checkpoints, checkpoint), (attempts, attempt)]
    rows += [(timeline_events, row) for row in event_rows(events)]
    statement = _new_run_statement(
        tuple((table.name, tuple(row)) for table, row in rows),
        notify_channel is not None,
        audit is not None,
    )
    params = {
        f"p{index}_{column}": value
        for index, (_, row) in enumerate(rows)
        for column, value in row.items()
    }
    if notify_channel is not None:
        params["notify_channel"] = notify_channel
    if audit is not None:
        params.update(audit_append_params(audit, _AUDIT_PREFIX))
    return bool((await conn.execute(statement, params)).scalar_one())


_AUDIT_PREFIX = "audit_"


@functools.lru_cache(maxsize=64)
def _new_run_statement(
    shape: tuple[tuple[str, tuple[str, ...]], ...], notify: bool, audited: bool
) -> TextClause:
    """The PostgreSQL statement of :func:`insert_new_run` for rows with these columns.

    Built as text once per shape (a run's rows always have the same columns): composing it as
    a SQLAlchemy expression cost more CPU per submit than everything else a submit does.
    The job row is inserted ``ON CONFLICT DO NOTHING``; every other row is selected from its
    ``RETURNING``, so nothing is written when the thread exists.
    """

    def values(index: int, table_name: str, columns: tuple[str, ...]) -> str:
        table = _TABLES[table_name]
        return ", ".join(
            f"CAST(:p{index}_{column} AS {pg_cast_type(table, column)})" for column in columns
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
    if audited:
        # The chain lock it takes is held until the statement commits: short.
        parts.append(f"new_audit AS ({audit_append_sql(_AUDIT_PREFIX, 'new_job')})")
    if not notify:
        return text(f"WITH {', '.join(parts)} SELECT count(*) FROM new_job")
    # pg_notify is volatile, so the planner keeps the call although nothing reads its value.
    return text(
        f"WITH {', '.join(parts)} SELECT count(*) FROM "
        "(SELECT pg_notify(CAST(:notify_channel AS text), '') FROM new_job) AS notified"
    )


def new_checkpoint_id() -> str:
    """A checkpoint id."""
    return f"cp-{uuid.uuid4().hex}"


async def update_job(conn: AsyncConnection, thread_id: str, values: dict[str, Any]) -> None:
    """Overwrite columns of one job."""
    await conn.execute(update(jobs).where(jobs.c.thread_id == thread_id).values(**values))


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What a job listing or a bulk action selects; every field narrows the selection."""

    status: str | None = None
    statuses: tuple[str, ...] | None = None  # any of these (bulk cancel: the live statuses)
    workflow: str | None = None
    tenant_id: str | None = None
    created_after_ms: int | None = None  # exclusive
    created_before_ms: int | None = None  # exclusive
    thread_ids: tuple[str, ...] | None = None
    schedule_id: str | None = None  # jobs one schedule queued (``idx_runtime_jobs_schedule``)


class JobOrder:
    """The orders a job listing pages in; both are keyset-paged on an index."""

    UPDATED = "updated"  # upstream's: most recently updated first (updated_at_ms, thread_id)
    CREATED = "created"  # newest first by creation (created_at_ms, thread_id): never changes


def _job_conditions(postgres: bool, where: JobFilter) -> list[ColumnElement[bool]]:
    c = jobs.c
    conditions: list[ColumnElement[bool]] = []
    if where.status is not None:
        conditions.append(c.status == where.status)
    if where.statuses is not None:
        conditions.append(c.status.in_(where.statuses))
    if where.workflow is not None:
        conditions.append(c.workflow == where.workflow)
    if where.tenant_id is not None:
        conditions.append(c.tenant_id == where.tenant_id)
    if where.created_after_ms is not None:
        conditions.append(c.created_at_ms > where.created_after_ms)
    if where.created_before_ms is not None:
        conditions.append(c.created_at_ms < where.created_before_ms)
    if where.thread_ids is not None:
        conditions.append(in_list(postgres, c.thread_id, "filter_thread_ids"))
    if where.schedule_id is not None:
        conditions.append(c.schedule_id == where.schedule_id)
    return conditions


def _job_params(where: JobFilter) -> dict[str, Any]:
    return {} if where.thread_ids is None else {"filter_thread_ids": list(where.thread_ids)}


async def list_jobs(
    conn: AsyncConnection,
    *,
    where: JobFilter,
    limit: int,
    offset: int = 0,
    order: str = JobOrder.UPDATED,
    after: tuple[int, str] | None = None,
) -> list[JobRecord]:
    """A page of jobs in ``order``, newest first, ties by thread id; ``after`` is the
    (timestamp, thread id) of the previous page's last row (keyset paging)."""
    key = jobs.c.created_at_ms if order == JobOrder.CREATED else jobs.c.updated_at_ms
    statement = select(jobs).order_by(key.desc(), jobs.c.thread_id)
    conditions = _job_conditions(is_postgres(conn), where)
    if after is not None:
        # ``key <= :k`` is the index condition; the tie on ``key`` continues by thread id.
        conditions.append(key <= after[0])
        conditions.append(or_(key < after[0], jobs.c.thread_id > after[1]))
    if conditions:
        statement = statement.where(*conditions)
    statement = statement.limit(limit)
    if offset:
        statement = statement.offset(offset)
    rows = (await conn.execute(statement, _job_params(where))).mappings()
    return [JobRecord.from_row(row) for row in rows]


async def count_jobs(conn: AsyncConnection, *, where: JobFilter) -> int:
    """How many jobs match the filter."""
    statement = select(func.count()).select_from(jobs)
    conditions = _job_conditions(is_postgres(conn), where)
    if conditions:
        statement = statement.where(*conditions)
    return int((await conn.execute(statement, _job_params(where))).scalar_one())


async def select_thread_ids(conn: AsyncConnection, *, where: JobFilter, limit: int) -> list[str]:
    """The thread ids a bulk action selects, oldest first (creation order, then id)."""
    statement = (
        select(jobs.c.thread_id).order_by(jobs.c.created_at_ms, jobs.c.thread_id).limit(limit)
    )
    conditions = _job_conditions(is_postgres(conn), where)
    if conditions:
        statement = statement.where(*conditions)
    return [str(row[0]) for row in (await conn.execute(statement, _job_params(where))).all()]


async def promote_due(conn: AsyncConnection, *, now_ms: int, limit: int = 1000) -> int:
    """Scheduled jobs whose start or wake-up time has come → ``queued`` (guarded: a poll may
    have leased one meanwhile, and then it stays ``running``)."""
    # A bounded batch in thread order, skipping rows another transaction holds (the row lock
    # order: job rows are taken by thread id, and this pass never waits for one).
    due = (
        select(jobs.c.thread_id)
        .where(jobs.c.status == inline("scheduled"), jobs.c.run_at_ms <= now_ms)
        .order_by(jobs.c.thread_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    thread_ids = [str(row[0]) for row in (await conn.execute(due)).all()]
    if not thread_ids:
        return 0
    result = await conn.execute(
        update(jobs)
        .where(
            jobs.c.thread_id.in_(thread_ids),
            jobs.c.status == inline("scheduled"),
            jobs.c.run_at_ms <= now_ms,
        )
        .values(status="queued", updated_at_ms=now_ms)
    )
    return int(result.rowcount or 0)


async def count_scheduled(conn: AsyncConnection) -> int:
    """Jobs waiting for their start or wake-up time."""
    statement = select(func.count()).select_from(jobs).where(jobs.c.status == inline("scheduled"))
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
    statement = row_by_key(attempts, "attempt_id", lock)
    row = (await conn.execute(statement, {"attempt_id": attempt_id})).mappings().first()
    return None if row is None else AttemptRecord.from_row(row)


async def lock_attempt(conn: AsyncConnection, attempt_id: str) -> AttemptRecord | None:
    """One attempt, locked with its job's row: the job first, then the attempt (the lock
    order of docs/architecture.md), in one statement."""
    row = (await conn.execute(_LOCK_ATTEMPT, {"attempt_id": attempt_id})).mappings().first()
    return None if row is None else AttemptRecord.from_row(row)


# ``OF`` lists the tables in lock order: PostgreSQL locks the job's row, then the attempt's.
_LOCK_ATTEMPT = (
    select(attempts)
    .join(jobs, jobs.c.thread_id == attempts.c.run_id)
    .where(attempts.c.attempt_id == bindparam("attempt_id"))
    .with_for_update(of=[jobs, attempts])
)


async def get_attempts(
    conn: AsyncConnection, attempt_ids: Sequence[str], *, lock: bool = False
) -> dict[str, AttemptRecord]:
    """Attempts by id (missing ids are absent), locked in id order so batches cannot deadlock."""
    statement = _get_attempts(is_postgres(conn), lock)
    rows = (await conn.execute(statement, {"attempt_ids": list(attempt_ids)})).mappings()
    return {row["attempt_id"]: AttemptRecord.from_row(row) for row in rows}


@functools.cache
def _get_attempts(postgres: bool, lock: bool) -> Select[Any]:
    statement = (
        select(attempts)
        .where(in_list(postgres, attempts.c.attempt_id, "attempt_ids"))
        .order_by(attempts.c.attempt_id)
    )
    return statement.with_for_update() if lock else statement


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
    statuses = None if expected_statuses is None else tuple(expected_statuses)
    params = {f"v_{name}": value for name, value in values.items()}
    params["b_attempt_id"] = attempt_id
    result = await conn.execute(_update_attempt(tuple(values), statuses), params)
    return bool(result.rowcount)


@functools.lru_cache(maxsize=256)
def _update_attempt(columns: tuple[str, ...], statuses: tuple[str, ...] | None) -> Update:
    statement = update(attempts).where(attempts.c.attempt_id == bindparam("b_attempt_id"))
    if statuses is not None:
        statement = statement.where(attempts.c.status.in_(statuses))
    return statement.values({name: bindparam(f"v_{name}") for name in columns})


async def leases_for_attempts(
    conn: AsyncConnection, attempt_ids: Sequence[str]
) -> list[LeaseRecord]:
    """Every lease ever granted on the given attempts, oldest first."""
    if not attempt_ids:
        return []
    statement = _leases_for_attempts(is_postgres(conn))
    result = await conn.execute(statement, {"attempt_ids": list(attempt_ids)})
    return [LeaseRecord.from_row(row) for row in result.mappings()]


@functools.cache
def _leases_for_attempts(postgres: bool) -> Select[Any]:
    return (
        select(leases)
        .where(in_list(postgres, leases.c.attempt_id, "attempt_ids"))
        .order_by(leases.c.acquired_at_ms, leases.c.lease_id)
    )


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
    params = {"thread_id": thread_id, "attempt_id": attempt_id}
    statement = _latest_checkpoint(attempt_id is not None)
    row = (await conn.execute(statement, params)).mappings().first()
    return None if row is None else CheckpointRecord.from_row(row)


@functools.cache
def _latest_checkpoint(of_attempt: bool) -> Select[Any]:
    statement = select(checkpoints).where(checkpoints.c.thread_id == bindparam("thread_id"))
    if of_attempt:
        statement = statement.where(checkpoints.c.attempt_id == bindparam("attempt_id"))
    return statement.order_by(checkpoints.c.seq.desc()).limit(1)


def lineage_point(
    candidates: Iterable[CheckpointRecord], attempt_id: str, start_checkpoint_id: str | None
) -> CheckpointRecord | None:
    """Where an attempt's lineage stands among ``candidates``: the attempt's own newest
    checkpoint, else the checkpoint it started from (a run's first checkpoint, the resumed
    attempt's point, a replay's target). Its own checkpoints always have a higher ``seq``."""
    mine = [
        c
        for c in candidates
        if c.attempt_id == attempt_id
        or (start_checkpoint_id is not None and c.checkpoint_id == start_checkpoint_id)
    ]
    return max(mine, key=lambda c: c.seq, default=None)


async def current_checkpoint(
    conn: AsyncConnection, thread_id: str, attempt_id: str | None
) -> CheckpointRecord | None:
    """The checkpoint the thread's current attempt stands on (see :func:`lineage_point`), in
    one query; the thread's newest checkpoint when there is no such attempt or point."""
    if attempt_id is not None:
        params = {"thread_id": thread_id, "attempt_id": attempt_id}
        row = (await conn.execute(_current_checkpoint(), params)).mappings().first()
        if row is not None:
            return CheckpointRecord.from_row(row)
    return await latest_checkpoint(conn, thread_id)


@functools.cache
def _current_checkpoint() -> Select[Any]:
    start = (
        select(attempts.c.start_checkpoint_id)
        .where(attempts.c.attempt_id == bindparam("attempt_id"))
        .scalar_subquery()
    )
    return (
        select(checkpoints)
        .where(
            checkpoints.c.thread_id == bindparam("thread_id"),
            or_(
                checkpoints.c.attempt_id == bindparam("attempt_id"),
                checkpoints.c.checkpoint_id == start,
            ),
        )
        .order_by(checkpoints.c.seq.desc())
        .limit(1)
    )


async def mark_running_many(
    conn: AsyncConnection, thread_ids: Sequence[str], now_ms: int
) -> dict[str, Any]:
    """Jobs → running (their attempts were leased); returns each job's input by thread id."""
    if not thread_ids:
        return {}
    statement = _mark_running_many(is_postgres(conn))
    result = await conn.execute(statement, {"thread_ids": list(thread_ids), "now": now_ms})
    return {thread_id: None if raw is None else load_json(raw) for thread_id, raw in result.all()}


@functools.cache
def _mark_running_many(postgres: bool) -> ReturningUpdate[Any]:
    return (
        update(jobs)
        .where(in_list(postgres, jobs.c.thread_id, "thread_ids"))
        .values(status="running", updated_at_ms=bindparam("now"))
        .returning(jobs.c.thread_id, jobs.c.input_json)
    )


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The checkpoint an attempt starts from, as a dispatch carries it."""

    checkpoint_id: str
    state: Any


async def resume_checkpoints(
    conn: AsyncConnection, wanted: Sequence[tuple[str, str, str | None]]
) -> dict[str, ResumePoint]:
    """Where each attempt (``attempt_id``, ``thread_id``, ``start_checkpoint_id``) starts, by
    attempt id: its own newest checkpoint, else its start checkpoint (an attempt's own
    checkpoints always have a higher ``seq``). One query."""
    if not wanted:
        return {}
    starts = sorted({start for _, _, start in wanted if start is not None})
    params: dict[str, Any] = {
        "thread_ids": sorted({thread_id for _, thread_id, _ in wanted}),
        "attempt_ids": [attempt_id for attempt_id, _, _ in wanted],
    }
    if starts:
        params["checkpoint_ids"] = starts
    result = await conn.execute(_resume_checkpoints(is_postgres(conn), bool(starts)), params)
    by_thread: dict[str, list[CheckpointRecord]] = {}
    for row in result.mappings():
        found = CheckpointRecord.from_row(row)
        by_thread.setdefault(found.thread_id, []).append(found)
    chosen: dict[str, ResumePoint] = {}
    for attempt_id, thread_id, start in wanted:
        point = lineage_point(by_thread.get(thread_id, ()), attempt_id, start)
        if point is not None:
            chosen[attempt_id] = ResumePoint(point.checkpoint_id, point.state)
    return chosen


@functools.cache
def _resume_checkpoints(postgres: bool, with_starts: bool) -> Select[Any]:
    condition: ColumnElement[bool] = in_list(postgres, checkpoints.c.attempt_id, "attempt_ids")
    if with_starts:
        condition = or_(condition, in_list(postgres, checkpoints.c.checkpoint_id, "checkpoint_ids"))
    return select(checkpoints).where(
        in_list(postgres, checkpoints.c.thread_id, "thread_ids"), condition
    )


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
