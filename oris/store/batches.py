"""The worker protocol's set-based writes: lease a poll's batch, complete a batch of acks.

On PostgreSQL each is one statement whatever the batch size: the rows travel as arrays and
data-modifying CTEs write every table, so a dispatch or a batch of acks costs one round trip.
On SQLite (no data-modifying CTEs) each table gets one statement. Callers hold the rows locked
(the claim's ``FOR UPDATE SKIP LOCKED``, the ack's ``FOR UPDATE``, each taking a job's row
before its attempt's: the lock order of docs/architecture.md) or the SQLite write lock, so the
writes need no guards and wait for no lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, text
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.states import AttemptStatus, JobStatus, LeaseState
from oris.store import jobs as job_store
from oris.store import leases as lease_store
from oris.store.dialect import is_postgres
from oris.store.records import AttemptRecord, LeaseRecord, load_json
from oris.store.tables import attempts, leases


@dataclass(frozen=True, slots=True)
class NewLease:
    """One attempt of a poll's batch and the lease it gets."""

    attempt_id: str
    thread_id: str
    tenant_id: str | None
    lease_id: str
    parent_span_id: str | None
    span_id: str | None
    start_checkpoint_id: str | None


@dataclass(frozen=True, slots=True)
class Leased:
    """What a leased batch's dispatches carry: each job's input by thread id and each
    attempt's resume point by attempt id (absent when it has no checkpoint)."""

    inputs: dict[str, Any]
    resume_points: dict[str, job_store.ResumePoint]


@dataclass(frozen=True, slots=True)
class Completion:
    """One ``completed`` ack of a batch, with everything it writes as JSON text."""

    attempt_id: str
    thread_id: str
    lease_id: str
    new_lease_version: int
    output_json: str | None  # on the attempt: only when the ack carries an output
    job_output_json: str  # on the job: always (``null`` without an output)
    error_json: str | None
    parent_span_id: str | None  # the attempt's next span; None keeps the current one
    span_id: str | None
    ack_hash: str
    response_json: str


async def lease_attempts(
    conn: AsyncConnection,
    batch: Sequence[NewLease],
    *,
    worker_id: str,
    now_ms: int,
    expires_at_ms: int,
    events: Sequence[dict[str, Any]],
) -> Leased:
    """Attempts → leased, their leases, jobs → running and the timeline events; returns what
    the dispatches carry (on PostgreSQL read by the same statement)."""
    if not batch:
        return Leased({}, {})
    if is_postgres(conn):
        rows = await conn.execute(
            _LEASE_STATEMENT,
            {
                "attempt_ids": [b.attempt_id for b in batch],
                "parents": [b.parent_span_id for b in batch],
                "spans": [b.span_id for b in batch],
                "lease_ids": [b.lease_id for b in batch],
                "tenants": [b.tenant_id for b in batch],
                "attempt_threads": [b.thread_id for b in batch],
                "starts": [b.start_checkpoint_id for b in batch],
                "threads": sorted({b.thread_id for b in batch}),
                "worker_id": worker_id,
                "now": now_ms,
                "expires": expires_at_ms,
                **_event_arrays(events),
            },
        )
        leased = Leased({}, {})
        for key, raw, checkpoint_id in rows.all():
            value = None if raw is None else load_json(raw)
            if checkpoint_id is None:
                leased.inputs[key] = value
            else:
                leased.resume_points[key] = job_store.ResumePoint(checkpoint_id, value)
        return leased
    await job_store.update_attempts(
        conn,
        [
            {"b_attempt_id": b.attempt_id, "b_parent_span": b.parent_span_id, "b_span": b.span_id}
            for b in batch
        ],
        {
            "status": AttemptStatus.LEASED.value,
            "retry_at_ms": None,
            "lease_expired_at_ms": None,
            "started_at_ms": now_ms,
            "updated_at_ms": now_ms,
            "trace_parent_span_id": bindparam("b_parent_span"),
            "trace_span_id": bindparam("b_span"),
        },
    )
    await lease_store.insert_many(
        conn,
        [
            {
                "lease_id": b.lease_id,
                "attempt_id": b.attempt_id,
                "worker_id": worker_id,
                "tenant_id": b.tenant_id,
                "state": LeaseState.ACTIVE.value,
                "acquired_at_ms": now_ms,
                "heartbeat_at_ms": now_ms,
                "lease_expires_at_ms": expires_at_ms,
                "version": 1,
            }
            for b in batch
        ],
    )
    inputs = await job_store.mark_running_many(conn, sorted({b.thread_id for b in batch}), now_ms)
    await job_store.add_events(conn, events)
    resume_points = await job_store.resume_checkpoints(
        conn, [(b.attempt_id, b.thread_id, b.start_checkpoint_id) for b in batch]
    )
    return Leased(inputs, resume_points)


async def lock_for_completion(
    conn: AsyncConnection, attempt_ids: Sequence[str]
) -> tuple[dict[str, AttemptRecord], dict[str, LeaseRecord]]:
    """The attempts a batch of acks may complete and their active leases, by attempt id, row-
    locked in the runtime's lock order: on PostgreSQL each attempt's job row, then the attempt
    (both waited for, in thread then attempt id order, so batches cannot deadlock with each
    other or with a cancel), then its lease, skipped when another transaction holds it. One
    statement, which returns only attempts that have an active lease: all a completion can
    use. (SQLite's single writer needs no row locks.)"""
    if not is_postgres(conn):
        locked = await job_store.get_attempts(conn, attempt_ids, lock=True)
        return locked, await lease_store.lock_active_for_attempts(conn, attempt_ids)
    rows = await conn.execute(_LOCK_FOR_COMPLETION, {"attempt_ids": list(attempt_ids)})
    found: dict[str, AttemptRecord] = {}
    live: dict[str, LeaseRecord] = {}
    for row in rows.mappings():
        attempt = AttemptRecord.from_row(row)
        found[attempt.attempt_id] = attempt
        live[attempt.attempt_id] = LeaseRecord.from_row(
            {column.name: row[f"l_{column.name}"] for column in leases.c}
        )
    return found, live


async def complete_attempts(
    conn: AsyncConnection,
    batch: Sequence[Completion],
    *,
    now_ms: int,
    events: Sequence[dict[str, Any]],
) -> None:
    """Attempts and jobs → completed, the timeline events, and the leases released with the
    ack stored for repeats."""
    if not batch:
        return
    if is_postgres(conn):
        await conn.execute(
            _COMPLETE_STATEMENT,
            {
                "attempt_ids": [c.attempt_id for c in batch],
                "outputs": [c.output_json for c in batch],
                "errors": [c.error_json for c in batch],
                "parents": [c.parent_span_id for c in batch],
                "spans": [c.span_id for c in batch],
                "threads": [c.thread_id for c in batch],
                "job_outputs": [c.job_output_json for c in batch],
                "lease_ids": [c.lease_id for c in batch],
                "versions": [c.new_lease_version for c in batch],
                "hashes": [c.ack_hash for c in batch],
                "responses": [c.response_json for c in batch],
                "now": now_ms,
                **_event_arrays(events),
            },
        )
        return

    def keep(column: str, bind: str) -> Any:
        current = attempts.c[column]
        return func.coalesce(bindparam(bind, type_=current.type), current)

    await job_store.update_attempts(
        conn,
        [
            {
                "b_attempt_id": c.attempt_id,
                "b_output": c.output_json,
                "b_error": c.error_json,
                "b_parent_span": c.parent_span_id,
                "b_span": c.span_id,
            }
            for c in batch
        ],
        {
            "status": AttemptStatus.COMPLETED.value,
            "finished_at_ms": now_ms,
            "updated_at_ms": now_ms,
            "retry_at_ms": None,
            "output_json": keep("output_json", "b_output"),
            "error_json": keep("error_json", "b_error"),
            "trace_parent_span_id": keep("trace_parent_span_id", "b_parent_span"),
            "trace_span_id": keep("trace_span_id", "b_span"),
        },
    )
    await job_store.update_jobs(
        conn,
        [
            {"b_thread_id": c.thread_id, "b_output": c.job_output_json, "b_error": c.error_json}
            for c in batch
        ],
        {
            "status": JobStatus.COMPLETED.value,
            "updated_at_ms": now_ms,
            "output_json": bindparam("b_output"),
            "error_json": bindparam("b_error"),
        },
    )
    await job_store.add_events(conn, events)
    await lease_store.release_many(
        conn,
        [
            {
                "b_lease_id": c.lease_id,
                "b_version": c.new_lease_version,
                "b_ack_hash": c.ack_hash,
                "b_response": c.response_json,
            }
            for c in batch
        ],
        now_ms,
    )


def _event_arrays(events: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    rows = job_store.event_rows(events)
    return {
        "event_threads": [r["thread_id"] for r in rows],
        "event_attempts": [r["attempt_id"] for r in rows],
        "event_types": [r["event_type"] for r in rows],
        "event_checkpoints": [r["checkpoint_id"] for r in rows],
        "event_details": [r["details_json"] for r in rows],
        "event_times": [r["created_at_ms"] for r in rows],
    }


# Timeline events from arrays; shared by both statements below.
_EVENTS_CTE = """
    events AS (
        INSERT INTO runtime_timeline_events (thread_id, attempt_id, event_type, checkpoint_id,
            details_json, created_at_ms)
        SELECT e.thread_id, e.attempt_id, e.event_type, e.checkpoint_id, e.details, e.created
        FROM unnest(CAST(:event_threads AS text[]), CAST(:event_attempts AS text[]),
                    CAST(:event_types AS text[]), CAST(:event_checkpoints AS text[]),
                    CAST(:event_details AS text[]), CAST(:event_times AS bigint[]))
             AS e(thread_id, attempt_id, event_type, checkpoint_id, details, created)
        RETURNING 1
    )"""

# Data-modifying CTEs all run to completion whether or not the outer statement reads them.
_LEASE_POSTGRES = f"""
WITH picked AS (
        SELECT * FROM unnest(CAST(:attempt_ids AS text[]), CAST(:parents AS text[]),
                             CAST(:spans AS text[]), CAST(:lease_ids AS text[]),
                             CAST(:tenants AS text[]), CAST(:attempt_threads AS text[]),
                             CAST(:starts AS text[]))
             AS p(attempt_id, parent_span, span, lease_id, tenant_id, thread_id, start_id)
    ),
    leased AS (
        UPDATE runtime_attempts AS a
        SET status = 'leased', retry_at_ms = NULL, lease_expired_at_ms = NULL,
            started_at_ms = CAST(:now AS bigint), updated_at_ms = CAST(:now AS bigint),
            trace_parent_span_id = p.parent_span, trace_span_id = p.span
        FROM picked AS p
        WHERE a.attempt_id = p.attempt_id
        RETURNING 1
    ),
    new_leases AS (
        INSERT INTO runtime_leases (lease_id, attempt_id, worker_id, tenant_id, state,
            acquired_at_ms, heartbeat_at_ms, lease_expires_at_ms, version)
        SELECT p.lease_id, p.attempt_id, CAST(:worker_id AS text), p.tenant_id, 'active',
               CAST(:now AS bigint), CAST(:now AS bigint), CAST(:expires AS bigint), 1
        FROM picked AS p
        RETURNING 1
    ),{_EVENTS_CTE},
    running AS (
        UPDATE runtime_jobs AS j
        SET status = 'running', updated_at_ms = CAST(:now AS bigint)
        WHERE j.thread_id = ANY(CAST(:threads AS text[]))
        RETURNING j.thread_id, j.input_json
    )
-- Each job's input, then each attempt's resume point: its own newest checkpoint, else its
-- start checkpoint (an attempt's own checkpoints always come later in the thread).
SELECT r.thread_id, r.input_json, CAST(NULL AS text) AS checkpoint_id FROM running AS r
UNION ALL
SELECT p.attempt_id, c.state_json, c.checkpoint_id
FROM picked AS p
CROSS JOIN LATERAL (
    SELECT c.checkpoint_id, c.state_json FROM runtime_checkpoints AS c
    WHERE c.thread_id = p.thread_id
      AND (c.attempt_id = p.attempt_id OR c.checkpoint_id = p.start_id)
    ORDER BY c.seq DESC
    LIMIT 1
) AS c
"""

_COMPLETE_POSTGRES = f"""
WITH done AS (
        SELECT * FROM unnest(CAST(:attempt_ids AS text[]), CAST(:outputs AS text[]),
                             CAST(:errors AS text[]), CAST(:parents AS text[]),
                             CAST(:spans AS text[]), CAST(:threads AS text[]),
                             CAST(:job_outputs AS text[]), CAST(:lease_ids AS text[]),
                             CAST(:versions AS bigint[]), CAST(:hashes AS text[]),
                             CAST(:responses AS text[]))
             AS d(attempt_id, output, error, parent_span, span, thread_id, job_output,
                  lease_id, version, ack_hash, response)
    ),
    attempts_done AS (
        UPDATE runtime_attempts AS a
        SET status = 'completed', finished_at_ms = CAST(:now AS bigint),
            updated_at_ms = CAST(:now AS bigint), retry_at_ms = NULL,
            output_json = COALESCE(d.output, a.output_json),
            error_json = COALESCE(d.error, a.error_json),
            trace_parent_span_id = COALESCE(d.parent_span, a.trace_parent_span_id),
            trace_span_id = COALESCE(d.span, a.trace_span_id)
        FROM done AS d
        WHERE a.attempt_id = d.attempt_id
        RETURNING 1
    ),
    jobs_done AS (
        UPDATE runtime_jobs AS j
        SET status = 'completed', updated_at_ms = CAST(:now AS bigint),
            output_json = d.job_output, error_json = d.error
        FROM done AS d
        WHERE j.thread_id = d.thread_id
        RETURNING 1
    ),{_EVENTS_CTE}
UPDATE runtime_leases AS l
SET state = 'released', ended_at_ms = CAST(:now AS bigint), version = d.version,
    ack_hash = d.ack_hash, ack_response_json = d.response
FROM done AS d
WHERE l.lease_id = d.lease_id AND l.state = 'active'
"""

# PostgreSQL locks each row's tables in the order of the locking clauses: the job and the
# attempt are waited for, the lease is skipped when held. The statement's later writes (the
# completion statement's CTEs) then touch only rows this one locked.
_LOCK_FOR_COMPLETION_POSTGRES = f"""
SELECT {", ".join(f"a.{c.name}" for c in attempts.c)},
       {", ".join(f"l.{c.name} AS l_{c.name}" for c in leases.c)}
FROM runtime_attempts AS a
JOIN runtime_jobs AS j ON j.thread_id = a.run_id
JOIN runtime_leases AS l ON l.attempt_id = a.attempt_id AND l.state = 'active'
WHERE a.attempt_id = ANY(CAST(:attempt_ids AS text[]))
ORDER BY a.run_id, a.attempt_id
FOR UPDATE OF j
FOR UPDATE OF a
FOR UPDATE OF l SKIP LOCKED
"""

# Parsed once: building a text() clause scans its SQL for parameters on every call.
_LEASE_STATEMENT = text(_LEASE_POSTGRES)
_COMPLETE_STATEMENT = text(_COMPLETE_POSTGRES)
_LOCK_FOR_COMPLETION = text(_LOCK_FOR_COMPLETION_POSTGRES)
