"""Job use cases: run, read, cancel. One transaction each; audit rows in the same transaction."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.calendar import start_time
from oris.domain.clock import now_ms, optional_rfc3339
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
    LIVE_ATTEMPT_STATUSES,
    AttemptStatus,
    InterruptStatus,
    JobStatus,
    LeaseState,
)
from oris.domain.trace import TraceContext
from oris.domain.validation import (
    TimeoutPolicy,
    check_id,
    check_offset,
    check_priority,
    check_text,
    check_workflow,
    clamp_limit,
    optional_id,
    require_id,
)
from oris.services import audit, events
from oris.services.context import RequestContext
from oris.services.transactions import retried
from oris.services.views import (
    attempt_trace,
    attempt_view,
    checkpoint_item,
    interrupt_view,
    job_list_item,
    observability_view,
    timeline_items,
    trace_view,
)
from oris.store import interrupts as interrupt_store
from oris.store import jobs as job_store
from oris.store import leases as lease_store
from oris.store.database import Database
from oris.store.jobs import JobFilter, JobOrder
from oris.store.records import AttemptRecord, CheckpointRecord, JobRecord, dump_json
from oris.store.wakeup import CHANNEL as WORK_CHANNEL

log = logging.getLogger("oris.jobs")

DEFAULT_WORKFLOW = "echo"
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200
JOB_ORDERS = (JobOrder.UPDATED, JobOrder.CREATED)
BULK_DEFAULT_LIMIT = 1000
BULK_MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class RunCommand:
    """What a caller asked ``POST /v1/jobs/run`` to do, before validation."""

    thread_id: str | None
    input: Any = None
    idempotency_key: str | None = None
    timeout_policy: dict[str, Any] | None = None
    priority: int | None = None
    tenant_id: str | None = None
    workflow: str | None = None
    retry_policy: dict[str, Any] | None = None
    run_at: str | None = None
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ValidRun:
    """A run request that passed every check; nothing has been written yet."""

    thread_id: str
    input: Any
    idempotency_key: str | None
    timeout: TimeoutPolicy | None
    priority: int
    tenant_id: str | None
    workflow: str
    retry: RetryPolicy | None
    trace: TraceContext
    # When the run may start (None: now), how the caller said it, and the schedule that ran it.
    run_at_ms: int | None = None
    start_request: tuple[str, Any] | None = None
    schedule_id: str | None = None

    def payload_hash(self) -> str:
        """Fingerprint of everything that defines the run (trace context excluded)."""
        fields: dict[str, Any] = {
            "thread_id": self.thread_id,
            "input": self.input,
            "workflow": self.workflow,
            "timeout": None
            if self.timeout is None
            else [self.timeout.timeout_ms, self.timeout.on_timeout_status.value],
            "priority": self.priority,
            "tenant_id": self.tenant_id,
            "retry": None if self.retry is None else self.retry.to_json(),
        }
        if self.start_request is not None:
            # As the caller said it: a repeated delay_ms names the same run, not a later one.
            fields["start"] = list(self.start_request)
        canonical = dump_json(fields)
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_retry_policy(raw: dict[str, Any] | None) -> RetryPolicy | None:
    """Validate a ``retry_policy`` object from a request body."""
    if raw is None:
        return None
    return RetryPolicy.parse(
        strategy=str(raw.get("strategy", "")),
        backoff_ms=int(raw.get("backoff_ms", 0)),
        max_retries=int(raw.get("max_retries", 0)),
        max_backoff_ms=raw.get("max_backoff_ms"),
        multiplier=raw.get("multiplier"),
    )


def validate_run(command: RunCommand, traceparent: str | None, now: int | None = None) -> ValidRun:
    """Every check of a run, in upstream's order where it has one, before any write (G11)."""
    thread_id = require_id("thread_id", command.thread_id)
    priority = check_priority(command.priority)
    tenant_id = optional_id("tenant_id", command.tenant_id)
    key = command.idempotency_key
    if key is not None:
        if not key.strip():
            raise InvalidArgument("idempotency_key must not be empty")
        check_id("idempotency_key", key)
    timeout = None
    if command.timeout_policy is not None:
        timeout = TimeoutPolicy.parse(
            int(command.timeout_policy["timeout_ms"]),
            str(command.timeout_policy["on_timeout_status"]),
        )
    workflow = DEFAULT_WORKFLOW
    if command.workflow is not None:
        workflow = check_workflow(require_id("workflow", command.workflow))
    retry = parse_retry_policy(command.retry_policy)
    run_at_ms = start_time(command.run_at, command.delay_ms, now_ms() if now is None else now)
    start_request: tuple[str, Any] | None = None
    if command.run_at is not None:
        start_request = ("run_at", command.run_at.strip())
    elif command.delay_ms is not None:
        start_request = ("delay_ms", command.delay_ms)
    trace = TraceContext.start(traceparent)
    return ValidRun(
        thread_id,
        command.input,
        key,
        timeout,
        priority,
        tenant_id,
        workflow,
        retry,
        trace,
        run_at_ms=run_at_ms,
        start_request=start_request,
    )


def attempt_values(
    *,
    attempt_id: str,
    thread_id: str,
    run_no: int,
    kind: str,
    workflow: str,
    priority: int,
    tenant_id: str | None,
    timeout_ms: int | None,
    timeout_status: str | None,
    retry: RetryPolicy | None,
    trace: TraceContext | None,
    start_checkpoint_id: str | None,
    resume_value: Any,
    has_resume_value: bool,
    now: int,
    available_at: int | None = None,
) -> dict[str, Any]:
    """Column values of a fresh, queued attempt (attempt number 1), dispatchable from
    ``available_at`` (default: now)."""
    return {
        "attempt_id": attempt_id,
        "run_id": thread_id,
        "run_no": run_no,
        "attempt_no": 1,
        "status": AttemptStatus.QUEUED.value,
        "kind": kind,
        "workflow": workflow,
        "priority": priority,
        "tenant_id": tenant_id,
        "available_at_ms": now if available_at is None else max(available_at, now),
        "execution_timeout_ms": timeout_ms,
        "timeout_terminal_status": timeout_status,
        "retry_strategy": None if retry is None else retry.strategy.value,
        "retry_backoff_ms": None if retry is None else retry.backoff_ms,
        "retry_max_backoff_ms": None if retry is None else retry.max_backoff_ms,
        "retry_multiplier": None if retry is None else retry.multiplier,
        "retry_max_retries": None if retry is None else retry.max_retries,
        "trace_id": None if trace is None else trace.trace_id,
        "trace_parent_span_id": None if trace is None else trace.parent_span_id,
        "trace_span_id": None if trace is None else trace.span_id,
        "trace_flags": "01" if trace is None else trace.flags,
        "start_checkpoint_id": start_checkpoint_id,
        "resume_value_json": dump_json(resume_value) if has_resume_value else None,
        "created_at_ms": now,
        "updated_at_ms": now,
    }


def _refuse_rerun(job: JobRecord) -> None:
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"thread '{job.thread_id}' is cancelled")
    if job.status not in {JobStatus.COMPLETED, JobStatus.FAILED}:
        raise Conflict(
            f"thread '{job.thread_id}' already has an active run (status {job.status})",
            {"thread_id": job.thread_id, "status": job.status},
        )


@retried
async def run(db: Database, ctx: RequestContext, command: RunCommand) -> dict[str, Any]:
    """Store a job and its first attempt in one transaction and return at once (``queued``,
    or ``scheduled`` when its start time is ahead)."""
    now = now_ms()
    valid = validate_run(command, ctx.traceparent, now)
    payload_hash = valid.payload_hash()
    thread_exists = False
    if valid.idempotency_key is None and db.is_postgres:
        answer, thread_exists = await _run_new_thread_in_one_statement(db, ctx, valid, now)
        if answer is not None:
            return answer
    async with db.write() as conn:
        if valid.idempotency_key is not None:
            stored = await job_store.reserve_idempotency_key(
                conn,
                key=valid.idempotency_key,
                operation="run",
                thread_id=valid.thread_id,
                payload_hash=payload_hash,
                now_ms=now,
            )
            if stored is not None:
                replayed = _replay_stored_run(valid, payload_hash, stored)
                await _audit_run(
                    conn,
                    ctx,
                    valid.thread_id,
                    {"idempotent_replay": True, "attempt_id": replayed.get("attempt_id")},
                )
                return replayed
        response, notified = await _start_run(conn, ctx, valid, now, thread_exists=thread_exists)
        assert response is not None  # only the one-statement start answers None
        await db.work.signal(conn, notified=notified)
        if valid.idempotency_key is not None:
            await job_store.store_idempotent_response(conn, valid.idempotency_key, response)
        # Last statement before commit: the audit chain lock is held from here to the commit,
        # and every audited write in every replica waits for it.
        await _audit_run(
            conn,
            ctx,
            valid.thread_id,
            {
                "attempt_id": response["attempt_id"],
                "run_no": response["run_no"],
                "workflow": valid.workflow,
            },
        )
        return response


async def _audit_run(
    conn: AsyncConnection, ctx: RequestContext, thread_id: str, details: dict[str, Any]
) -> None:
    await audit.write(
        conn, ctx, action="job.run", resource_type="thread", resource_id=thread_id, details=details
    )


async def _run_new_thread_in_one_statement(
    db: Database, ctx: RequestContext, valid: ValidRun, now: int
) -> tuple[dict[str, Any] | None, bool]:
    """PostgreSQL, the common submit (a new thread, no idempotency key): the job, its first
    checkpoint, attempt and timeline event, the work ``NOTIFY`` and the audit row in one
    statement that commits on its own, with no ``BEGIN``/``COMMIT`` round trips.

    The answer, or None when the thread exists (second value True) or the statement failed
    for a reason other than an unreachable database: it wrote nothing, and the transactional
    path does the work or names the error."""
    try:
        async with db.single() as conn:
            answer, notified = await _start_run(conn, ctx, valid, now, audit_in_statement=True)
            if answer is not None:
                await db.work.signal(conn, notified=notified)
    except DBAPIError as error:
        log.warning(
            "one-statement run failed; running it in a transaction",
            extra={"thread_id": valid.thread_id, "error": type(error.orig).__name__},
        )
        return None, False
    return answer, answer is None


def _replay_stored_run(
    valid: ValidRun, payload_hash: str, stored: tuple[str, str, str, Any]
) -> dict[str, Any]:
    operation, thread_id, stored_hash, response = stored
    if operation != "run" or thread_id != valid.thread_id or stored_hash != payload_hash:
        raise Conflict(
            "idempotency_key already exists with different request payload",
            {"idempotency_key": valid.idempotency_key, "operation": operation},
        )
    return {**response, "idempotent_replay": True}


async def _start_run(
    conn: AsyncConnection,
    ctx: RequestContext,
    valid: ValidRun,
    now: int,
    *,
    audit_in_statement: bool = False,
    thread_exists: bool = False,
) -> tuple[dict[str, Any] | None, bool]:
    """The run's rows and its answer; True when a statement already sent the work NOTIFY.

    With ``audit_in_statement`` (PostgreSQL), the new-thread statement also writes the run's
    audit row, and an existing thread answers None with nothing written. ``thread_exists``:
    that statement already found the thread, so do not try again (if retention deletes the
    finished job in between, the caller gets a 409 to retry)."""
    delayed = valid.run_at_ms is not None and valid.run_at_ms > now
    status = JobStatus.SCHEDULED if delayed else JobStatus.QUEUED
    job_values: dict[str, Any] = {
        "status": status.value,
        "workflow": valid.workflow,
        "input_json": dump_json(valid.input),
        "tenant_id": valid.tenant_id,
        "priority": valid.priority,
        "timeout_ms": None if valid.timeout is None else valid.timeout.timeout_ms,
        "timeout_status": None if valid.timeout is None else valid.timeout.on_timeout_status.value,
        "retry_policy_json": None if valid.retry is None else dump_json(valid.retry.to_json()),
        "output_json": None,
        "error_json": None,
        "cancel_reason": None,
        "updated_at_ms": now,
        "run_at_ms": valid.run_at_ms if delayed else None,
        "schedule_id": valid.schedule_id,
    }
    attempt_id = job_store.new_attempt_id(valid.thread_id)

    def first_attempt(run_no: int, start_checkpoint_id: str) -> dict[str, Any]:
        return attempt_values(
            attempt_id=attempt_id,
            thread_id=valid.thread_id,
            run_no=run_no,
            kind="run",
            workflow=valid.workflow,
            priority=valid.priority,
            tenant_id=valid.tenant_id,
            timeout_ms=job_values["timeout_ms"],
            timeout_status=job_values["timeout_status"],
            retry=valid.retry,
            trace=valid.trace,
            start_checkpoint_id=start_checkpoint_id,
            resume_value=None,
            has_resume_value=False,
            now=now,
            available_at=valid.run_at_ms,
        )

    def queued_event(run_no: int, checkpoint_id: str) -> dict[str, Any]:
        return {
            "thread_id": valid.thread_id,
            "event_type": "job_queued",
            "attempt_id": attempt_id,
            "checkpoint_id": checkpoint_id,
            "details": {
                "run_no": run_no,
                "workflow": valid.workflow,
                "request_id": ctx.request_id,
                **({"run_at": optional_rfc3339(job_values["run_at_ms"])} if delayed else {}),
                **({"schedule_id": valid.schedule_id} if valid.schedule_id else {}),
            },
            "now_ms": now,
        }

    # A new thread (the common case) is written in one statement on PostgreSQL.
    checkpoint_id = job_store.new_checkpoint_id()
    event = queued_event(1, checkpoint_id)
    audit_entry = None
    if audit_in_statement:
        audit_entry = audit.success(
            ctx,
            "job.run",
            ("thread", valid.thread_id),
            {"attempt_id": attempt_id, "run_no": 1, "workflow": valid.workflow},
        )
    created = not thread_exists and await job_store.insert_new_run(
        conn,
        job={
            "thread_id": valid.thread_id,
            "run_no": 1,
            "current_attempt_id": attempt_id,
            "created_at_ms": now,
            **job_values,
        },
        checkpoint={
            "checkpoint_id": checkpoint_id,
            "thread_id": valid.thread_id,
            "attempt_id": None,
            "seq": 0,
            "step": None,
            "state_json": dump_json({}),
            "created_at_ms": now,
        },
        attempt=first_attempt(1, checkpoint_id),
        events=[event],
        notify_channel=WORK_CHANNEL,
        audit=audit_entry,
    )
    run_no = 1
    if created:
        events.note(conn, [event])
    elif audit_in_statement:
        return None, False
    else:
        existing = await job_store.get_job(conn, valid.thread_id, lock=True)
        if existing is None:  # purged by retention between the two statements (rare)
            raise Conflict(f"thread '{valid.thread_id}' changed concurrently; retry")
        _refuse_rerun(existing)
        run_no = existing.run_no + 1
        initial = await job_store.insert_checkpoint(
            conn, thread_id=valid.thread_id, attempt_id=None, step=None, state={}, now_ms=now
        )
        await job_store.insert_attempt(conn, first_attempt(run_no, initial.checkpoint_id))
        await job_store.update_job(
            conn,
            valid.thread_id,
            {
                **job_values,
                "run_no": run_no,
                "current_attempt_id": attempt_id,
                # A rerun of a tick's thread stays listed under its schedule.
                "schedule_id": valid.schedule_id or existing.schedule_id,
            },
        )
        await events.record_many(conn, [queued_event(run_no, initial.checkpoint_id)])
    answer: dict[str, Any] = {
        "thread_id": valid.thread_id,
        "status": status.value,
        "interrupts": [],
        "idempotency_key": valid.idempotency_key,
        "idempotent_replay": False,
        "trace": trace_view(valid.trace),
        "attempt_id": attempt_id,
        "run_no": run_no,
        "workflow": valid.workflow,
        "run_at": optional_rfc3339(valid.run_at_ms if delayed else None),
    }
    if valid.schedule_id is not None:
        answer["schedule_id"] = valid.schedule_id
    return answer, created


def job_status(field: str, value: str | None, allowed: set[str] | None = None) -> str | None:
    """A job status filter: blank means absent; 400 when it is not one of ``allowed``."""
    value = (check_text(field, value) or "").strip() or None
    names = allowed if allowed is not None else {s.value for s in JobStatus}
    if value is not None and value not in names:
        ordered = [s.value for s in JobStatus if s.value in names]
        raise InvalidArgument(f"{field} must be one of: " + "|".join(ordered))
    return value


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The filters of ``GET /v1/jobs`` and ``POST /v1/jobs/cancel``, before validation."""

    status: str | None = None
    workflow: str | None = None
    tenant_id: str | None = None
    created_after: str | int | None = None
    created_before: str | int | None = None
    thread_ids: list[str] | None = None
    schedule_id: str | None = None

    def validated(self, *, statuses: set[str] | None = None) -> JobFilter:
        """The store filter; 400 on any malformed field."""
        after = parse_time_bound("created_after", self.created_after)
        before = parse_time_bound("created_before", self.created_before)
        thread_ids = None
        if self.thread_ids is not None:
            if len(self.thread_ids) > BULK_MAX_LIMIT:
                raise InvalidArgument(f"thread_ids may name at most {BULK_MAX_LIMIT} threads")
            thread_ids = tuple(
                dict.fromkeys(require_id("thread_ids[]", item) for item in self.thread_ids)
            )
        return JobFilter(
            status=job_status("status", self.status, statuses),
            workflow=optional_id("workflow", self.workflow),
            tenant_id=optional_id("tenant_id", self.tenant_id),
            created_after_ms=after,
            created_before_ms=before,
            thread_ids=thread_ids,
            schedule_id=optional_id("schedule_id", self.schedule_id),
        )


def _job_fingerprint(where: JobFilter) -> str:
    return fingerprint(
        {
            "status": where.status,
            "workflow": where.workflow,
            "tenant_id": where.tenant_id,
            "created_after": where.created_after_ms,
            "created_before": where.created_before_ms,
            "schedule_id": where.schedule_id,
        }
    )


async def list_jobs(
    db: Database,
    *,
    status: str | None,
    limit: int | None,
    offset: int | None,
    query: JobQuery | None = None,
    order: str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """``ListJobsResponse`` with the page bounds, a total count (first page and offset pages)
    and ``next_cursor``, which continues after this page's last job however many jobs were
    inserted since (``None`` on the last page)."""
    resolved_limit = clamp_limit(limit, default=LIST_DEFAULT_LIMIT, maximum=LIST_MAX_LIMIT)
    resolved_offset = check_offset(offset)
    where = (query or JobQuery()).validated()
    if status is not None:
        where = replace(where, status=job_status("status", status))
    wanted_order = (check_text("order", order) or "").strip() or None
    if wanted_order is not None and wanted_order not in JOB_ORDERS:
        raise InvalidArgument("order must be one of: " + "|".join(JOB_ORDERS))
    digest = _job_fingerprint(where)
    after: tuple[int, str] | None = None
    if cursor is not None:
        if resolved_offset:
            raise InvalidArgument("cursor and offset cannot be combined")
        parsed = decode_cursor(cursor, kind="jobs", key_types=(int, str))
        resolved_order = wanted_order or parsed.order
        check_cursor(parsed, order=resolved_order, filters_fingerprint=digest)
        after = (int(parsed.key[0]), str(parsed.key[1]))
    else:
        resolved_order = wanted_order or JobOrder.UPDATED
    async with db.read() as conn:
        rows = await job_store.list_jobs(
            conn,
            where=where,
            limit=resolved_limit + 1,
            offset=resolved_offset,
            order=resolved_order,
            after=after,
        )
        total = None if cursor is not None else await job_store.count_jobs(conn, where=where)
    page = rows[:resolved_limit]
    next_cursor = None
    if len(rows) > resolved_limit:
        last = page[-1]
        key = last.created_at_ms if resolved_order == JobOrder.CREATED else last.updated_at_ms
        next_cursor = encode_cursor(Cursor("jobs", resolved_order, digest, (key, last.thread_id)))
    return {
        "jobs": [job_list_item(job) for job in page],
        "total": total,
        "limit": resolved_limit,
        "offset": resolved_offset,
        "order": resolved_order,
        "next_cursor": next_cursor,
    }


async def _require_job(conn: AsyncConnection, thread_id: str, *, lock: bool = False) -> JobRecord:
    job = await job_store.get_job(conn, require_id("thread_id", thread_id), lock=lock)
    if job is None:
        raise NotFound(f"No state found for thread: {thread_id}")
    return job


def _state_view(job: JobRecord, checkpoint_id: str | None, values: Any) -> dict[str, Any]:
    return {
        "thread_id": job.thread_id,
        "checkpoint_id": checkpoint_id,
        "created_at": _created_at(job),
        "values": values,
        "status": job.status,
        "workflow": job.workflow,
        "input": job.input,
        "output": job.output,
        "error": job.error,
        "run_no": job.run_no,
        "tenant_id": job.tenant_id,
        "priority": job.priority,
        "updated_at": _updated_at(job),
        "run_at": optional_rfc3339(job.run_at_ms),
        "schedule_id": job.schedule_id,
    }


def _created_at(job: JobRecord) -> str:
    return job_list_item(job)["created_at"]  # type: ignore[no-any-return]


def _updated_at(job: JobRecord) -> str:
    return job_list_item(job)["updated_at"]  # type: ignore[no-any-return]


async def get_state(db: Database, thread_id: str) -> dict[str, Any]:
    """``JobStateResponse``: the state the current attempt stands on (its own newest
    checkpoint, else the one it starts from) plus the job's true status."""
    async with db.read() as conn:
        job = await _require_job(conn, thread_id)
        current = await job_store.current_checkpoint(conn, job.thread_id, job.current_attempt_id)
    return _state_view(
        job, current.checkpoint_id if current else None, current.state if current else {}
    )


async def detail(db: Database, thread_id: str) -> dict[str, Any]:
    """``JobDetailResponse`` with the attempts, their leases and the pending interrupt."""
    async with db.read() as conn:
        job = await _require_job(conn, thread_id)
        checkpoints = await job_store.list_checkpoints(conn, job.thread_id)
        events = await job_store.list_events(conn, job.thread_id)
        attempt_rows = await job_store.list_attempts(conn, job.thread_id)
        leases = await job_store.leases_for_attempts(conn, [a.attempt_id for a in attempt_rows])
        pending = await interrupt_store.pending_for_thread(conn, job.thread_id)
    current = _current_attempt(job, attempt_rows)
    point = _lineage_point(current, checkpoints)
    view = _state_view(job, point.checkpoint_id if point else None, point.state if point else {})
    view.update(
        {
            "history": [checkpoint_item(cp) for cp in checkpoints],
            "timeline": timeline_items(events),
            "pending_interrupt": None if pending is None else interrupt_view(pending),
            "trace": None if current is None else trace_view(attempt_trace(current)),
            "attempts": [
                attempt_view(a, [lease for lease in leases if lease.attempt_id == a.attempt_id])
                for a in attempt_rows
            ],
            "current_attempt_id": job.current_attempt_id,
            "cancel_reason": job.cancel_reason,
        }
    )
    observability = observability_view(checkpoints, events, leases)
    if observability is not None:
        view["observability"] = observability
    return view


def _lineage_point(
    current: AttemptRecord | None, checkpoints: list[CheckpointRecord]
) -> CheckpointRecord | None:
    """The checkpoint the current attempt stands on, as ``get_state`` finds it."""
    if current is not None:
        point = job_store.lineage_point(
            checkpoints, current.attempt_id, current.start_checkpoint_id
        )
        if point is not None:
            return point
    return checkpoints[-1] if checkpoints else None


def _current_attempt(job: JobRecord, attempt_rows: list[AttemptRecord]) -> AttemptRecord | None:
    for attempt in reversed(attempt_rows):
        if attempt.attempt_id == job.current_attempt_id:
            return attempt
    return attempt_rows[-1] if attempt_rows else None


async def history(db: Database, thread_id: str) -> dict[str, Any]:
    """``JobHistoryResponse``: checkpoints oldest first; unknown thread gives an empty list."""
    require_id("thread_id", thread_id)
    async with db.read() as conn:
        checkpoints = await job_store.list_checkpoints(conn, thread_id)
    return {"thread_id": thread_id, "history": [checkpoint_item(cp) for cp in checkpoints]}


async def timeline(db: Database, thread_id: str, *, export: bool = False) -> dict[str, Any]:
    """``JobTimelineResponse`` (or ``TimelineExportResponse``): every event of the thread, the
    latest attempt's trace context and the ``observability`` object."""
    require_id("thread_id", thread_id)
    async with db.read() as conn:
        events = await job_store.list_events(conn, thread_id)
        if not events:
            raise NotFound(f"No timeline found for thread: {thread_id}")
        checkpoints = await job_store.list_checkpoints(conn, thread_id)
        job = await job_store.get_job(conn, thread_id)
        attempt_rows = await job_store.list_attempts(conn, thread_id)
        leases = await job_store.leases_for_attempts(conn, [a.attempt_id for a in attempt_rows])
    current = None if job is None else _current_attempt(job, attempt_rows)
    data: dict[str, Any] = {
        "thread_id": thread_id,
        "timeline": timeline_items(events),
        "trace": None if current is None else trace_view(attempt_trace(current)),
    }
    if export:
        data["history"] = [checkpoint_item(cp) for cp in checkpoints]
        data["checkpoints"] = [{**checkpoint_item(cp), "values": cp.state} for cp in checkpoints]
    observability = observability_view(checkpoints, events, leases)
    if observability is not None:
        data["observability"] = observability
    return data


async def checkpoint(db: Database, thread_id: str, checkpoint_id: str) -> dict[str, Any]:
    """``CheckpointInspectResponse``: one checkpoint's stored state."""
    require_id("thread_id", thread_id)
    if not checkpoint_id.strip():
        raise InvalidArgument("checkpoint_id must not be empty")
    check_id("checkpoint_id", checkpoint_id)
    async with db.read() as conn:
        found = await job_store.get_checkpoint(conn, thread_id, checkpoint_id)
    if found is None:
        raise NotFound(f"Checkpoint not found: {checkpoint_id}")
    return {
        "thread_id": thread_id,
        "checkpoint_id": found.checkpoint_id,
        "created_at": checkpoint_item(found)["created_at"],
        "values": found.state,
        "seq": found.seq,
        "step": found.step,
        "attempt_id": found.attempt_id,
    }


@retried
async def cancel(
    db: Database, ctx: RequestContext, thread_id: str, reason: str | None
) -> dict[str, Any]:
    """Persist a cancel: live attempt cancelled, its lease revoked, pending interrupts closed.

    Locks in the runtime's order: the job's row, then (by the writes) the attempt's, the
    lease's and the interrupts'; the audit row last."""
    now = now_ms()
    async with db.write() as conn:
        job = await _require_job(conn, thread_id, lock=True)
        if job.status == JobStatus.CANCELLED:
            return {"thread_id": job.thread_id, "status": "cancelled", "reason": job.cancel_reason}
        if job.status in {JobStatus.COMPLETED, JobStatus.FAILED}:
            raise Conflict(
                f"thread '{job.thread_id}' already finished with status {job.status}",
                {"thread_id": job.thread_id, "status": job.status},
            )
        await cancel_job_in(conn, job, reason=reason, now=now, event_type="job_cancelled")
        await audit.write(
            conn,
            ctx,
            action="job.cancel",
            resource_type="thread",
            resource_id=job.thread_id,
            details={"reason": reason},
        )
    return {"thread_id": job.thread_id, "status": "cancelled", "reason": reason}


async def cancel_job_in(
    conn: AsyncConnection, job: JobRecord, *, reason: str | None, now: int, event_type: str
) -> None:
    """Cancel a job inside the caller's transaction (shared by cancel and interrupt reject)."""
    if job.current_attempt_id is not None:
        cancelled = await job_store.update_attempt(
            conn,
            job.current_attempt_id,
            {
                "status": AttemptStatus.CANCELLED.value,
                "finished_at_ms": now,
                "updated_at_ms": now,
                "retry_at_ms": None,
            },
            expected_statuses=[s.value for s in LIVE_ATTEMPT_STATUSES]
            + [AttemptStatus.INTERRUPTED.value],
        )
        if cancelled:
            await lease_store.end_active_lease(
                conn, job.current_attempt_id, LeaseState.REVOKED, now
            )
    await interrupt_store.close_pending(conn, job.thread_id, InterruptStatus.CANCELLED)
    await job_store.update_job(
        conn,
        job.thread_id,
        {"status": JobStatus.CANCELLED.value, "cancel_reason": reason, "updated_at_ms": now},
    )
    await events.record(
        conn,
        thread_id=job.thread_id,
        event_type=event_type,
        attempt_id=job.current_attempt_id,
        details={"reason": reason},
        now_ms=now,
    )


async def start_new_in(
    db: Database, conn: AsyncConnection, ctx: RequestContext, valid: ValidRun, now: int
) -> dict[str, Any] | None:
    """Queue the first run of a thread inside the caller's transaction (a schedule's tick);
    None, with nothing written, when the thread already exists."""
    if await job_store.get_job(conn, valid.thread_id) is not None:
        return None
    response, notified = await _start_run(conn, ctx, valid, now)
    assert response is not None
    await db.work.signal(conn, notified=notified)
    return response
