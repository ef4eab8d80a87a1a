"""Interrupts (resume, reject), job resume, job replay with its guard, and DLQ replay."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import Conflict, InvalidArgument, NotFound
from oris.domain.paging import (
    Cursor,
    check_cursor,
    decode_cursor,
    encode_cursor,
    fingerprint,
    parse_time_bound,
)
from oris.domain.retry import RetryPolicy
from oris.domain.states import (
    AttemptStatus,
    InterruptStatus,
    JobStatus,
    LeaseState,
    ReplayStatus,
)
from oris.domain.trace import TraceContext
from oris.domain.validation import check_id, check_text, clamp_limit, optional_id, require_id
from oris.services import audit, events
from oris.services.context import RequestContext
from oris.services.incidents import check_freeze
from oris.services.jobs import attempt_values, cancel_job_in
from oris.services.runtime import Runtime
from oris.services.transactions import retried
from oris.services.views import attempt_trace, dead_letter_view, interrupt_view, trace_view
from oris.store import dead_letters as dlq_store
from oris.store import interrupts as interrupt_store
from oris.store import jobs as job_store
from oris.store import leases as lease_store
from oris.store.database import Database
from oris.store.dead_letters import DeadLetterFilter
from oris.store.dialect import insert_ignore
from oris.store.records import InterruptRecord, JobRecord, dump_json, load_json
from oris.store.tables import replay_effects

INTERRUPT_LIST_DEFAULT = 50
INTERRUPT_LIST_MAX = 200
DLQ_LIST_DEFAULT = 100
DLQ_LIST_MAX = 500
DLQ_THREAD_IDS_MAX = 10_000


def _hash(value: Any) -> str:
    return hashlib.sha256(dump_json(value).encode()).hexdigest()


async def list_interrupts(
    db: Database, *, status: str | None, run_id: str | None, limit: int | None
) -> dict[str, Any]:
    """``InterruptListResponse``, newest first."""
    resolved = clamp_limit(limit, default=INTERRUPT_LIST_DEFAULT, maximum=INTERRUPT_LIST_MAX)
    status = (check_text("status", status) or "").strip() or None
    run_id = (check_text("run_id", run_id) or "").strip() or None
    async with db.read() as conn:
        rows = await interrupt_store.list_interrupts(
            conn, status=status, run_id=run_id, limit=resolved
        )
    return {"interrupts": [interrupt_view(row, with_attempt=False) for row in rows]}


async def get_interrupt(db: Database, interrupt_id: str) -> dict[str, Any]:
    """``InterruptDetailResponse``."""
    async with db.read() as conn:
        found = await interrupt_store.get(conn, require_id("interrupt_id", interrupt_id))
    if found is None:
        raise NotFound("interrupt not found", {"interrupt_id": interrupt_id})
    return interrupt_view(found)


async def _require_live_job(conn: AsyncConnection, thread_id: str) -> JobRecord:
    job = await job_store.get_job(conn, thread_id, lock=True)
    if job is None:
        raise NotFound(f"No state found for thread: {thread_id}")
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"thread '{thread_id}' is cancelled")
    return job


async def _queue_follow_up(
    conn: AsyncConnection,
    job: JobRecord,
    *,
    kind: str,
    start_checkpoint_id: str | None,
    resume_value: Any,
    has_resume_value: bool,
    trace: TraceContext | None,
    now: int,
) -> str:
    """Queue a new attempt of the job's current run (resume or replay)."""
    attempt_id = job_store.new_attempt_id(job.thread_id)
    await job_store.insert_attempt(
        conn,
        attempt_values(
            attempt_id=attempt_id,
            thread_id=job.thread_id,
            run_no=job.run_no,
            kind=kind,
            workflow=job.workflow,
            priority=job.priority,
            tenant_id=job.tenant_id,
            timeout_ms=job.timeout_ms,
            timeout_status=job.timeout_status,
            retry=None if job.retry_policy is None else RetryPolicy.from_json(job.retry_policy),
            trace=trace,
            start_checkpoint_id=start_checkpoint_id,
            resume_value=resume_value,
            has_resume_value=has_resume_value,
            now=now,
        ),
    )
    await job_store.update_job(
        conn,
        job.thread_id,
        {
            "status": JobStatus.QUEUED.value,
            "current_attempt_id": attempt_id,
            "output_json": None,
            "error_json": None,
            "updated_at_ms": now,
        },
    )
    return attempt_id


async def _follow_up_trace(conn: AsyncConnection, job: JobRecord) -> TraceContext | None:
    if job.current_attempt_id is None:
        return None
    current = await job_store.get_attempt(conn, job.current_attempt_id)
    trace = None if current is None else attempt_trace(current)
    return None if trace is None else trace.child()


@retried
async def resume_interrupt(
    db: Database,
    ctx: RequestContext,
    interrupt_id: str,
    value: Any,
    *,
    action: str = "interrupt.resume",
) -> dict[str, Any]:
    """Resume a pending interrupt: a new attempt receives ``value``; repeats are idempotent."""
    require_id("interrupt_id", interrupt_id)
    payload_hash = _hash(value)
    async with db.write() as conn:
        interrupt = await _lock_interrupt_and_job(conn, interrupt_id)
        response = await _resume(conn, ctx, interrupt, value, payload_hash, action=action)
        await db.work.signal(conn)
        return response


async def _lock_interrupt_and_job(conn: AsyncConnection, interrupt_id: str) -> InterruptRecord:
    """The interrupt, locked after its job's row (the lock order: the job first)."""
    found = await interrupt_store.get(conn, interrupt_id)
    if found is None:
        raise NotFound("interrupt not found", {"interrupt_id": interrupt_id})
    await job_store.get_job(conn, found.thread_id, lock=True)
    locked = await interrupt_store.get(conn, interrupt_id, lock=True)
    assert locked is not None  # interrupts are never deleted
    return locked


async def _resume(
    conn: AsyncConnection,
    ctx: RequestContext,
    interrupt: InterruptRecord,
    value: Any,
    payload_hash: str,
    *,
    action: str,
) -> dict[str, Any]:
    if interrupt.status == InterruptStatus.RESUMED:
        if interrupt.resume_payload_hash != payload_hash:
            raise Conflict(
                "interrupt already resumed with different payload",
                {"interrupt_id": interrupt.interrupt_id},
            )
        await audit.write(
            conn,
            ctx,
            action=action,
            resource_type="interrupt" if action.startswith("interrupt") else "thread",
            resource_id=interrupt.interrupt_id
            if action.startswith("interrupt")
            else interrupt.thread_id,
            details={"interrupt_id": interrupt.interrupt_id, "idempotent_replay": True},
        )
        return {**interrupt.resume_response, "idempotent_replay": True}
    if interrupt.status != InterruptStatus.PENDING:
        raise Conflict(
            f"interrupt already {interrupt.status}", {"interrupt_id": interrupt.interrupt_id}
        )
    now = now_ms()
    job = await _require_live_job(conn, interrupt.thread_id)
    override = await check_freeze(conn, ctx, action)
    if job.status != JobStatus.INTERRUPTED:
        raise Conflict(
            f"thread '{job.thread_id}' is not waiting on an interrupt (status {job.status})"
        )
    # The resumed run continues the interrupted attempt's lineage, not the thread's newest
    # checkpoint (after a replay, that one belongs to the run the replay left behind).
    point = await job_store.current_checkpoint(conn, job.thread_id, job.current_attempt_id)
    trace = await _follow_up_trace(conn, job)
    attempt_id = await _queue_follow_up(
        conn,
        job,
        kind="resume",
        start_checkpoint_id=None if point is None else point.checkpoint_id,
        resume_value=value,
        has_resume_value=True,
        trace=trace,
        now=now,
    )
    response: dict[str, Any] = {
        "thread_id": job.thread_id,
        "status": JobStatus.QUEUED.value,
        "interrupts": [],
        "idempotency_key": None,
        "idempotent_replay": False,
        "trace": trace_view(trace),
        "attempt_id": attempt_id,
        "interrupt_id": interrupt.interrupt_id,
    }
    if not await interrupt_store.mark_resumed(
        conn, interrupt.interrupt_id, payload_hash=payload_hash, response=response, now_ms=now
    ):
        raise Conflict(
            "interrupt changed concurrently; retry", {"interrupt_id": interrupt.interrupt_id}
        )
    await events.record(
        conn,
        thread_id=job.thread_id,
        event_type="interrupt_resumed",
        attempt_id=attempt_id,
        details={"interrupt_id": interrupt.interrupt_id, "request_id": ctx.request_id},
        now_ms=now,
    )
    await audit.write(
        conn,
        ctx,
        action=action,
        resource_type="interrupt" if action.startswith("interrupt") else "thread",
        resource_id=interrupt.interrupt_id if action.startswith("interrupt") else job.thread_id,
        details={
            "interrupt_id": interrupt.interrupt_id,
            "attempt_id": attempt_id,
            **(override or {}),
        },
    )
    return response


@retried
async def resume_job(
    db: Database, ctx: RequestContext, thread_id: str, value: Any
) -> dict[str, Any]:
    """Resume the job's pending interrupt (same rules as the interrupt endpoint)."""
    require_id("thread_id", thread_id)
    payload_hash = _hash(value)
    async with db.write() as conn:
        job = await job_store.get_job(conn, thread_id, lock=True)
        if job is None:
            raise NotFound(f"No state found for thread: {thread_id}")
        if job.status == JobStatus.CANCELLED:
            raise Conflict(f"thread '{thread_id}' is cancelled")
        interrupt = await interrupt_store.pending_for_thread(conn, thread_id)
        if interrupt is None:
            interrupt = await _latest_resumed(conn, thread_id)
            if interrupt is None:
                raise Conflict(f"thread '{thread_id}' has no pending interrupt")
        response = await _resume(conn, ctx, interrupt, value, payload_hash, action="job.resume")
        await db.work.signal(conn)
        return response


async def _latest_resumed(conn: AsyncConnection, thread_id: str) -> InterruptRecord | None:
    rows = await interrupt_store.list_interrupts(
        conn, status=InterruptStatus.RESUMED.value, run_id=thread_id, limit=1
    )
    return rows[0] if rows else None


@retried
async def reject_interrupt(
    db: Database, ctx: RequestContext, interrupt_id: str, reason: str | None
) -> dict[str, Any]:
    """Reject a pending interrupt: the job is cancelled and the caller's reason kept."""
    require_id("interrupt_id", interrupt_id)
    async with db.write() as conn:
        interrupt = await _lock_interrupt_and_job(conn, interrupt_id)
        if interrupt.status != InterruptStatus.PENDING:
            raise Conflict(f"interrupt already {interrupt.status}", {"interrupt_id": interrupt_id})
        job = await job_store.get_job(conn, interrupt.thread_id, lock=True)
        if job is None:
            raise NotFound(f"No state found for thread: {interrupt.thread_id}")
        if not await interrupt_store.mark_rejected(conn, interrupt_id, reason):
            raise Conflict("interrupt changed concurrently; retry", {"interrupt_id": interrupt_id})
        final_reason = reason if reason else "interrupt rejected"
        await cancel_job_in(
            conn, job, reason=final_reason, now=now_ms(), event_type="interrupt_rejected"
        )
        await audit.write(
            conn,
            ctx,
            action="interrupt.reject",
            resource_type="interrupt",
            resource_id=interrupt_id,
            details={"thread_id": job.thread_id, "reason": reason},
        )
    return {
        "thread_id": job.thread_id,
        "status": "cancelled",
        "reason": final_reason,
        "interrupt_id": interrupt_id,
    }


@retried
async def replay_job(
    rt: Runtime, ctx: RequestContext, thread_id: str, checkpoint_id: str | None
) -> dict[str, Any]:
    """Queue a new attempt from a checkpoint; the guard makes duplicate replays return the first."""
    require_id("thread_id", thread_id)
    if checkpoint_id is not None:
        if not checkpoint_id.strip():
            raise InvalidArgument("checkpoint_id must not be empty")
        check_id("checkpoint_id", checkpoint_id)
    db = rt.db
    async with db.write() as conn:
        now = now_ms()
        job = await _require_live_job(conn, thread_id)
        if checkpoint_id is not None:
            target = await job_store.get_checkpoint(conn, thread_id, checkpoint_id)
            if target is None:
                raise NotFound(f"Checkpoint not found: {checkpoint_id}")
        else:
            target = await job_store.current_checkpoint(conn, thread_id, job.current_attempt_id)
            if target is None:
                raise NotFound(f"No state found for thread: {thread_id}")
        replay_target = f"checkpoint:{target.checkpoint_id}"
        fingerprint = hashlib.sha256(
            f"{thread_id}|{replay_target}|job_replay_effect".encode()
        ).hexdigest()
        claim_ttl_ms = int(rt.settings.replay_claim_ttl_seconds * 1000)
        claimed = await insert_ignore(
            conn,
            replay_effects,
            {
                "fingerprint": fingerprint,
                "thread_id": thread_id,
                "replay_target": replay_target,
                "effect_type": "job_replay",
                "status": "in_progress",
                "execution_count": 0,
                "claim_expires_at_ms": now + claim_ttl_ms,
                "created_at_ms": now,
            },
        )
        if not claimed:
            row = (
                (
                    await conn.execute(
                        select(replay_effects).where(replay_effects.c.fingerprint == fingerprint)
                    )
                )
                .mappings()
                .one()
            )
            if row["status"] == "completed":
                stored = load_json(row["response_json"])
                await audit.write(
                    conn,
                    ctx,
                    action="job.replay",
                    resource_type="thread",
                    resource_id=thread_id,
                    details={
                        "replay_target": replay_target,
                        "attempt_id": stored.get("attempt_id"),
                        "idempotent_replay": True,
                    },
                )
                return {**stored, "idempotent_replay": True}
            if row["claim_expires_at_ms"] is not None and row["claim_expires_at_ms"] > now:
                raise Conflict(
                    "replay already in progress for this target", {"replay_target": replay_target}
                )
            # A claim left behind by a crashed replay: take it over (G12).
        override = await check_freeze(conn, ctx, "job.replay")
        if job.status not in {JobStatus.COMPLETED, JobStatus.FAILED}:
            raise Conflict(
                f"thread '{thread_id}' has an active run (status {job.status}); replay needs a finished job",
                {"thread_id": thread_id, "status": job.status},
            )
        trace = await _follow_up_trace(conn, job)
        attempt_id = await _queue_follow_up(
            conn,
            job,
            kind="replay",
            start_checkpoint_id=target.checkpoint_id,
            resume_value=None,
            has_resume_value=False,
            trace=trace,
            now=now,
        )
        await db.work.signal(conn)
        response: dict[str, Any] = {
            "thread_id": thread_id,
            "status": JobStatus.QUEUED.value,
            "interrupts": [],
            "idempotency_key": None,
            "idempotent_replay": False,
            "trace": trace_view(trace),
            "attempt_id": attempt_id,
            "replay_target": replay_target,
            "checkpoint_id": target.checkpoint_id,
        }
        await conn.execute(
            update(replay_effects)
            .where(replay_effects.c.fingerprint == fingerprint)
            .values(
                status="completed",
                execution_count=replay_effects.c.execution_count + 1,
                attempt_id=attempt_id,
                completed_at_ms=now,
                claim_expires_at_ms=None,
                response_json=dump_json(response),
            )
        )
        await events.record(
            conn,
            thread_id=thread_id,
            event_type="replay_queued",
            attempt_id=attempt_id,
            checkpoint_id=target.checkpoint_id,
            details={"replay_target": replay_target, "request_id": ctx.request_id},
            now_ms=now,
        )
        await audit.write(
            conn,
            ctx,
            action="job.replay",
            resource_type="thread",
            resource_id=thread_id,
            details={"replay_target": replay_target, "attempt_id": attempt_id, **(override or {})},
        )
    return response


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    """The filters of ``GET /v1/dlq`` and ``POST /v1/dlq/replay``, before validation."""

    status: str | None = None
    workflow: str | None = None
    tenant_id: str | None = None
    created_after: str | int | None = None
    created_before: str | int | None = None
    thread_ids: list[str] | None = None

    def validated(self) -> DeadLetterFilter:
        """The store filter (``created_*`` bound when the entry was dead-lettered)."""
        thread_ids = None
        if self.thread_ids is not None:
            if len(self.thread_ids) > DLQ_THREAD_IDS_MAX:
                raise InvalidArgument(f"thread_ids may name at most {DLQ_THREAD_IDS_MAX} threads")
            thread_ids = tuple(
                dict.fromkeys(require_id("thread_ids[]", item) for item in self.thread_ids)
            )
        status = (check_text("status", self.status) or "").strip() or None
        if status is not None and status not in {s.value for s in ReplayStatus}:
            raise InvalidArgument(
                "status must be one of: " + "|".join(s.value for s in ReplayStatus)
            )
        return DeadLetterFilter(
            replay_status=status,
            workflow=optional_id("workflow", self.workflow),
            tenant_id=optional_id("tenant_id", self.tenant_id),
            dead_after_ms=parse_time_bound("created_after", self.created_after),
            dead_before_ms=parse_time_bound("created_before", self.created_before),
            thread_ids=thread_ids,
        )


def _dlq_fingerprint(where: DeadLetterFilter) -> str:
    return fingerprint(
        {
            "status": where.replay_status,
            "workflow": where.workflow,
            "tenant_id": where.tenant_id,
            "created_after": where.dead_after_ms,
            "created_before": where.dead_before_ms,
            "thread_ids": None if where.thread_ids is None else list(where.thread_ids),
        }
    )


async def list_dead_letters(
    db: Database,
    *,
    status: str | None,
    limit: int | None,
    query: DeadLetterQuery | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """``DeadLetterListResponse``, newest first; limit clamped to 1..500; ``next_cursor``
    continues after this page's last entry (``None`` on the last page)."""
    resolved = clamp_limit(limit, default=DLQ_LIST_DEFAULT, maximum=DLQ_LIST_MAX)
    base = query or DeadLetterQuery()
    if status is not None:
        base = replace(base, status=status)
    where = base.validated()
    digest = _dlq_fingerprint(where)
    after: tuple[int, str] | None = None
    if cursor is not None:
        parsed = decode_cursor(cursor, kind="dlq", key_types=(int, str))
        check_cursor(parsed, order="dead_at", filters_fingerprint=digest)
        after = (int(parsed.key[0]), str(parsed.key[1]))
    async with db.read() as conn:
        rows = await dlq_store.list_entries(conn, where=where, limit=resolved + 1, after=after)
    page = rows[:resolved]
    next_cursor = None
    if len(rows) > resolved:
        last = page[-1]
        next_cursor = encode_cursor(
            Cursor("dlq", "dead_at", digest, (last.dead_at_ms, last.attempt_id))
        )
    return {"entries": [dead_letter_view(row) for row in page], "next_cursor": next_cursor}


async def get_dead_letter(db: Database, attempt_id: str) -> dict[str, Any]:
    """``DeadLetterItem``."""
    if not attempt_id.strip():
        raise InvalidArgument("attempt_id must not be empty")
    async with db.read() as conn:
        entry = await dlq_store.get(conn, attempt_id)
    if entry is None:
        raise NotFound("dead letter not found", {"attempt_id": attempt_id})
    return dead_letter_view(entry)


@retried
async def replay_dead_letter(db: Database, ctx: RequestContext, attempt_id: str) -> dict[str, Any]:
    """Requeue a dead-lettered attempt with a fresh retry budget; one of many racers wins."""
    if not attempt_id.strip():
        raise InvalidArgument("attempt_id must not be empty")
    async with db.write() as conn:
        now = now_ms()
        if await dlq_store.get(conn, attempt_id) is None:
            raise NotFound(f"dead letter not found for attempt: {attempt_id}")
        # The lock order: the job's row, then the attempt's, then the entry's.
        attempt = await job_store.lock_attempt(conn, attempt_id)
        if attempt is None:
            raise NotFound(f"attempt not found: {attempt_id}")
        entry = await dlq_store.get(conn, attempt_id, lock=True)
        if entry is None or entry.replay_status != "pending":
            raise Conflict(f"dead letter already replayed for attempt: {attempt_id}")
        job = await _require_live_job(conn, attempt.run_id)
        if job.current_attempt_id != attempt_id or job.status != JobStatus.FAILED:
            raise Conflict(
                f"thread '{job.thread_id}' has moved on since this attempt failed (status {job.status})",
                {"thread_id": job.thread_id},
            )
        override = await check_freeze(conn, ctx, "dlq.replay")
        replay_count = await dlq_store.mark_replayed(conn, attempt_id, now)
        if replay_count is None:
            raise Conflict(f"dead letter already replayed for attempt: {attempt_id}")
        await lease_store.end_active_lease(conn, attempt_id, LeaseState.REVOKED, now)
        await db.work.signal(conn)
        requeued = await job_store.update_attempt(
            conn,
            attempt_id,
            {
                "status": AttemptStatus.QUEUED.value,
                "attempt_no": attempt.attempt_no + 1,
                "retry_base_no": attempt.attempt_no,
                "available_at_ms": now,
                "retry_at_ms": None,
                "started_at_ms": None,
                "finished_at_ms": None,
                "updated_at_ms": now,
            },
            expected_statuses=[AttemptStatus.FAILED.value],
        )
        if not requeued:
            raise Conflict(f"attempt {attempt_id} is not failed; nothing to replay")
        await job_store.update_job(
            conn,
            job.thread_id,
            {"status": JobStatus.QUEUED.value, "error_json": None, "updated_at_ms": now},
        )
        await events.record(
            conn,
            thread_id=job.thread_id,
            event_type="dlq_replayed",
            attempt_id=attempt_id,
            details={"replay_count": replay_count, "request_id": ctx.request_id},
            now_ms=now,
        )
        await audit.write(
            conn,
            ctx,
            action="dlq.replay",
            resource_type="attempt",
            resource_id=attempt_id,
            details={"thread_id": job.thread_id, "replay_count": replay_count, **(override or {})},
        )
    return {
        "attempt_id": attempt_id,
        "status": "requeued",
        "replay_count": replay_count,
        "thread_id": job.thread_id,
    }


async def attempt_retries(db: Database, attempt_id: str) -> dict[str, Any]:
    """``AttemptRetryHistoryResponse``."""
    if not attempt_id.strip():
        raise InvalidArgument("attempt_id must not be empty")
    async with db.read() as conn:
        attempt = await job_store.get_attempt(conn, attempt_id)
        if attempt is None:
            raise NotFound("attempt not found", {"attempt_id": attempt_id})
        rows = await dlq_store.retries(conn, attempt_id)
    return {
        "attempt_id": attempt_id,
        "current_attempt_no": attempt.attempt_no,
        "current_status": attempt.status,
        "history": [
            {
                "retry_no": index,
                "attempt_no": row["attempt_no"],
                "strategy": row["strategy"],
                "backoff_ms": row["backoff_ms"],
                "max_retries": row["max_retries"],
                "scheduled_at": to_rfc3339(row["scheduled_at_ms"]),
            }
            for index, row in enumerate(rows, start=1)
        ],
    }
