"""The worker protocol: poll, heartbeat/extend, report-step and ack, with lease fencing."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.calendar import parse_rfc3339
from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import Conflict, InvalidArgument, NotFound, OrisError
from oris.domain.retry import MAX_DELAY_MS, RetryPolicy
from oris.domain.states import (
    AckOutcome,
    AttemptStatus,
    DeadLetterReason,
    JobStatus,
    LeaseState,
    job_status_for,
)
from oris.domain.validation import TimeoutPolicy, TimeoutStatus, check_lease_ttl, require_id
from oris.services import events
from oris.services.jobs import parse_retry_policy
from oris.services.runtime import Runtime
from oris.services.transactions import retried
from oris.services.views import attempt_trace, trace_view
from oris.store import batches as batch_store
from oris.store import dead_letters as dlq_store
from oris.store import dispatch as dispatch_store
from oris.store import interrupts as interrupt_store
from oris.store import jobs as job_store
from oris.store import leases as lease_store
from oris.store import workers as worker_store
from oris.store.dialect import insert_ignore
from oris.store.records import AttemptRecord, LeaseRecord, dump_json
from oris.store.tables import step_reports

MAX_POLL_BATCH = 100
MAX_ACK_BATCH = 100
MAX_POLL_WAIT_MS = 30_000
LONG_POLL_RECHECK_SECONDS = 1.0
WORKER_SEEN_INTERVAL_SECONDS = 5.0
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
ACK_STATUSES = (*TERMINAL_STATUSES, "interrupted", "sleeping")


@dataclass(frozen=True, slots=True)
class PollCommand:
    """A worker's poll, before validation."""

    worker_id: str | None
    limit: int | None = None
    max_active_leases: int | None = None
    tenant_max_active_leases: int | None = None
    workflows: list[str] | None = None
    wait_ms: int | None = None
    # name -> {"retry_policy"?: {...}, "timeout_ms"?: int}: what the worker's workflows declare.
    workflow_defaults: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class WorkflowDefaults:
    """A workflow's declared defaults, validated; used only where the job has none."""

    retry: RetryPolicy | None
    timeout_ms: int | None


MAX_WORKFLOW_DEFAULTS = 1000


def _parse_workflow_defaults(
    raw: dict[str, dict[str, Any]] | None,
) -> dict[str, WorkflowDefaults]:
    """``workflow_defaults`` of a poll, with the job fields' rules and messages."""
    if not raw:
        return {}
    if len(raw) > MAX_WORKFLOW_DEFAULTS:
        raise InvalidArgument(
            f"workflow_defaults must name at most {MAX_WORKFLOW_DEFAULTS} workflows"
        )
    parsed = {}
    for name, entry in raw.items():
        require_id("workflow_defaults name", name)
        timeout_ms = entry.get("timeout_ms")
        if timeout_ms is not None:
            timeout_ms = TimeoutPolicy.parse(int(timeout_ms), TimeoutStatus.FAILED.value).timeout_ms
        parsed[name] = WorkflowDefaults(parse_retry_policy(entry.get("retry_policy")), timeout_ms)
    return parsed


_POLL_KEYS = (
    "attempt_id",
    "lease_id",
    "lease_expires_at",
    "reason",
    "worker_active_leases",
    "worker_limit",
    "tenant_id",
    "tenant_active_leases",
    "tenant_limit",
    "trace",
)


def _poll_response(decision: str, **fields: Any) -> dict[str, Any]:
    """``WorkerPollResponse``: every upstream key present (null when not applicable)."""
    response: dict[str, Any] = {"decision": decision}
    response.update({key: fields.pop(key, None) for key in _POLL_KEYS})
    response.update(fields)
    return response


def _effective_limit(requested: int | None, ceiling: int) -> int:
    """A poll may lower the server's cap, never raise it (G6); 0 is treated as 1."""
    if requested is None:
        return ceiling
    if requested < 0:
        raise InvalidArgument("lease limits must be >= 0")
    return min(max(requested, 1), ceiling)


@dataclass(frozen=True, slots=True)
class _PollPlan:
    """A validated poll."""

    worker_id: str
    batch: int
    worker_cap: int
    tenant_cap: int
    workflows: list[str] | None
    wait_ms: int
    defaults: dict[str, WorkflowDefaults]


def _plan_poll(rt: Runtime, command: PollCommand) -> _PollPlan:
    """Validate a poll before anything is read or written."""
    worker_id = require_id("worker_id", command.worker_id)
    if command.wait_ms is not None and not 0 <= command.wait_ms <= MAX_POLL_WAIT_MS:
        raise InvalidArgument(f"wait_ms must be between 0 and {MAX_POLL_WAIT_MS}")
    if command.limit is not None and command.limit < 0:
        raise InvalidArgument("limit must be >= 0")
    workflows = None
    if command.workflows is not None:
        workflows = [require_id("workflows[]", name) for name in command.workflows]
        if not workflows:
            raise InvalidArgument("workflows must not be empty when given")
    settings = rt.settings
    return _PollPlan(
        worker_id=worker_id,
        batch=min(max(command.limit or 1, 1), MAX_POLL_BATCH),
        worker_cap=_effective_limit(
            command.max_active_leases, settings.max_active_leases_per_worker
        ),
        tenant_cap=_effective_limit(
            command.tenant_max_active_leases, settings.max_active_leases_per_tenant
        ),
        workflows=workflows,
        wait_ms=command.wait_ms or 0,
        defaults=_parse_workflow_defaults(command.workflow_defaults),
    )


async def poll(rt: Runtime, command: PollCommand) -> dict[str, Any]:
    """Dispatch up to ``limit`` attempts, waiting up to ``wait_ms`` for work (always a 200).

    A long poll sleeps until a transaction that queued work commits (in this replica, or in any
    replica on PostgreSQL through NOTIFY) instead of making idle workers hammer the API.
    """
    return await _poll(rt, _plan_poll(rt, command))


async def ack_and_poll(
    rt: Runtime, command: PollCommand, acks: list[AckCommand]
) -> tuple[dict[str, Any], list[AckResult]]:
    """Apply a worker's acks, then poll: the acks' leases no longer count against its cap.

    The poll is validated first, so a poll that would be refused applies no ack. Each ack is
    answered exactly as ``/acks`` would answer it.
    """
    plan = _plan_poll(rt, command)
    if not acks:
        return await _poll(rt, plan), []
    sorted_acks = _sort_acks(acks)
    if plan.wait_ms or len(sorted_acks.batch) < len(acks):
        # Anything but plain completions, or a poll that may wait: as /acks, then the poll.
        answers = await _apply_acks(rt, plan.worker_id, acks, sorted_acks)
        return await _poll(rt, plan), answers
    # The common case: the completions and the claim share one transaction (one commit).
    answer, done = await _complete_and_claim(rt, plan, sorted_acks.batch)
    sorted_acks.answered(done)
    return answer, await _answer_rest(rt, plan.worker_id, acks, sorted_acks)


@retried
async def _complete_and_claim(
    rt: Runtime, plan: _PollPlan, batch: list[tuple[int, AckCommand, str]]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    started = time.perf_counter()
    async with rt.db.write() as conn:
        done = await _complete_in(conn, rt, plan.worker_id, batch)
        answer, recoveries = await _claim_for(conn, rt, plan)
    _count_completed(rt, done)
    _count_dispatched(rt, started, recoveries)
    return answer, done


async def _poll(rt: Runtime, plan: _PollPlan) -> dict[str, Any]:
    if not plan.wait_ms:
        return await _poll_once(rt, plan)
    deadline = time.monotonic() + plan.wait_ms / 1000
    while True:
        waiter = await rt.db.work.arm()
        answer = await _poll_once(rt, plan)
        remaining = deadline - time.monotonic()
        if answer["decision"] == "dispatched" or remaining <= 0:
            await rt.db.work.wait(waiter, 0)
            return answer
        # Re-check at least every second: a replica whose NOTIFY we missed (or SQLite in
        # another process) is then noticed within a second.
        await rt.db.work.wait(waiter, min(remaining, LONG_POLL_RECHECK_SECONDS))


@retried
async def _poll_once(rt: Runtime, plan: _PollPlan) -> dict[str, Any]:
    """One claim pass in a transaction of its own."""
    started = time.perf_counter()
    async with rt.db.write() as conn:
        answer, recoveries = await _claim_for(conn, rt, plan)
    _count_dispatched(rt, started, recoveries)
    return answer


def _count_dispatched(rt: Runtime, started: float, recoveries: list[float | None]) -> None:
    """Dispatch metrics, once the leases are committed."""
    latency_ms = (time.perf_counter() - started) * 1000
    for recovery_ms in recoveries:
        rt.metrics.dispatched(latency_ms, recovery_ms)


async def _claim_for(
    conn: AsyncConnection, rt: Runtime, plan: _PollPlan
) -> tuple[dict[str, Any], list[float | None]]:
    """A poll's answer and, for each dispatch, how long its attempt waited to be recovered."""
    worker_id, batch, workflows = plan.worker_id, plan.batch, plan.workflows
    worker_cap, tenant_cap = plan.worker_cap, plan.tenant_cap
    ttl_ms = int(rt.settings.lease_ttl_seconds * 1000)
    now = now_ms()
    await _note_worker(conn, rt, worker_id, now)
    active, tenant_active = await lease_store.active_counts(conn, worker_id, now)
    if active >= worker_cap:
        rt.metrics.backpressured("worker_limit")
        answer = _poll_response(
            "backpressure",
            reason="worker_limit",
            worker_active_leases=active,
            worker_limit=worker_cap,
            dispatches=[],
        )
        return answer, []
    slots = min(batch, worker_cap - active)
    dispatched = await _claim(
        conn, rt, worker_id, slots, tenant_cap, tenant_active, workflows, now, ttl_ms, plan.defaults
    )
    if not dispatched:
        throttled = [t for t, n in tenant_active.items() if n >= tenant_cap]
        waiting = await dispatch_store.first_waiting_tenant(
            conn, now_ms=now, tenants=throttled, workflows=workflows
        )
        if waiting is not None:
            rt.metrics.backpressured("tenant_limit")
            answer = _poll_response(
                "backpressure",
                reason="tenant_limit",
                worker_active_leases=active,
                worker_limit=worker_cap,
                tenant_id=waiting,
                tenant_active_leases=tenant_active.get(waiting, 0),
                tenant_limit=tenant_cap,
                dispatches=[],
            )
            return answer, []
        answer = _poll_response(
            "noop",
            worker_active_leases=active,
            worker_limit=worker_cap,
            tenant_limit=tenant_cap,
            dispatches=[],
        )
        return answer, []
    recoveries = [item.pop("_recovery_ms") for item in dispatched]
    first = dispatched[0]
    answer = _poll_response(
        "dispatched",
        attempt_id=first["attempt_id"],
        lease_id=first["lease_id"],
        lease_expires_at=first["lease_expires_at"],
        worker_active_leases=active,
        worker_limit=worker_cap,
        tenant_id=first["tenant_id"],
        tenant_active_leases=first["tenant_active_leases"],
        tenant_limit=tenant_cap,
        trace=first["trace"],
        **{k: v for k, v in first.items() if k not in _POLL_KEYS},
        dispatches=dispatched,
    )
    return answer, recoveries


async def _note_worker(conn: AsyncConnection, rt: Runtime, worker_id: str, now: int) -> None:
    """Keep the worker registry fresh without writing on every poll."""
    moment = time.monotonic()
    last = rt.worker_seen.get(worker_id)
    if last is not None and moment - last < WORKER_SEEN_INTERVAL_SECONDS:
        return
    if len(rt.worker_seen) > 100_000:
        rt.worker_seen.clear()
    rt.worker_seen[worker_id] = moment
    await worker_store.touch(conn, worker_id, "poll", now)


async def _claim(
    conn: AsyncConnection,
    rt: Runtime,
    worker_id: str,
    slots: int,
    tenant_cap: int,
    tenant_active: dict[str, int],
    workflows: list[str] | None,
    now: int,
    ttl_ms: int,
    defaults: dict[str, WorkflowDefaults] | None = None,
) -> list[dict[str, Any]]:
    """Claim attempts in dispatch order, honouring tenant caps as the batch fills up."""
    chosen: list[AttemptRecord] = []
    tenant_counts: list[int | None] = []
    for _ in range(4):  # a tenant may reach its cap mid-batch; rescan without it
        need = slots - len(chosen)
        if need <= 0:
            break
        excluded = {t for t, n in tenant_active.items() if n >= tenant_cap}
        candidates = await dispatch_store.claim_candidates(
            conn, now_ms=now, limit=need, workflows=workflows, excluded_tenants=excluded
        )
        if not candidates:
            break
        capped_midway = False
        for attempt in candidates:
            tenant = attempt.tenant_id
            if tenant is None:
                tenant_counts.append(None)
            elif tenant_active.get(tenant, 0) >= tenant_cap:
                capped_midway = True
                continue
            else:
                tenant_active[tenant] = tenant_active.get(tenant, 0) + 1
                tenant_counts.append(tenant_active[tenant])
            chosen.append(attempt)
        if not capped_midway and len(candidates) < need:
            break
    if not chosen:
        return []
    leased = await _lease_attempts(conn, rt, chosen, tenant_counts, worker_id, now, ttl_ms)
    if defaults:
        await _apply_workflow_defaults(conn, chosen, defaults, now)
    return leased


async def _apply_workflow_defaults(
    conn: AsyncConnection,
    chosen: list[AttemptRecord],
    defaults: dict[str, WorkflowDefaults],
    now: int,
) -> None:
    """Give attempts whose job set no retry policy (or no timeout) what their workflow
    declares, as the worker that will run them sent it. The job's own always wins: an attempt
    carries its job's policy and timeout from creation, so only empty ones are filled; once
    filled, they stay for the attempt's later executions."""
    for attempt in chosen:
        declared = defaults.get(attempt.workflow)
        if declared is None:
            continue
        values: dict[str, Any] = {}
        if declared.retry is not None and attempt.retry_policy is None:
            values.update(_policy_columns(declared.retry))
        if declared.timeout_ms is not None and attempt.execution_timeout_ms is None:
            values["execution_timeout_ms"] = declared.timeout_ms
            values["timeout_terminal_status"] = TimeoutStatus.FAILED.value
        if values:
            values["updated_at_ms"] = now
            await job_store.update_attempt(conn, attempt.attempt_id, values)


async def _lease_attempts(
    conn: AsyncConnection,
    rt: Runtime,
    chosen: list[AttemptRecord],
    tenant_counts: list[int | None],
    worker_id: str,
    now: int,
    ttl_ms: int,
) -> list[dict[str, Any]]:
    """Lease the claimed attempts (one statement on PostgreSQL, one per table on SQLite,
    whatever the batch size) and build the dispatch items."""
    expires = now + ttl_ms
    spans = []
    for attempt in chosen:
        trace = attempt_trace(attempt)
        spans.append(None if trace is None else trace.child())
    rt.metrics.lease_operation(operations=len(chosen))
    lease_ids = [f"lease-{uuid.uuid4()}" for _ in chosen]
    transitions = []
    for attempt, lease_id in zip(chosen, lease_ids, strict=True):
        transitions.append(
            {
                "thread_id": attempt.run_id,
                "event_type": "attempt_dispatched"
                if attempt.lease_expired_at_ms is None
                else "attempt_recovered",
                "attempt_id": attempt.attempt_id,
                "details": {
                    "worker_id": worker_id,
                    "attempt_no": attempt.attempt_no,
                    "lease_id": lease_id,
                },
                "now_ms": now,
            }
        )
    leased = await batch_store.lease_attempts(
        conn,
        [
            batch_store.NewLease(
                attempt_id=attempt.attempt_id,
                thread_id=attempt.run_id,
                tenant_id=attempt.tenant_id,
                lease_id=lease_id,
                parent_span_id=None if child is None else child.parent_span_id,
                span_id=None if child is None else child.span_id,
                start_checkpoint_id=attempt.start_checkpoint_id,
            )
            for attempt, child, lease_id in zip(chosen, spans, lease_ids, strict=True)
        ],
        worker_id=worker_id,
        now_ms=now,
        expires_at_ms=expires,
        events=transitions,
    )
    events.note(conn, transitions)
    dispatched = []
    for attempt, child, lease_id, tenant_count in zip(
        chosen, spans, lease_ids, tenant_counts, strict=True
    ):
        recovery_ms = None
        if attempt.lease_expired_at_ms is not None:
            recovery_ms = float(max(now - attempt.lease_expired_at_ms, 0))
        checkpoint = leased.resume_points.get(attempt.attempt_id)
        dispatched.append(
            {
                "attempt_id": attempt.attempt_id,
                "lease_id": lease_id,
                "lease_expires_at": to_rfc3339(expires),
                "lease_ttl_seconds": ttl_ms / 1000,
                "thread_id": attempt.run_id,
                "run_no": attempt.run_no,
                "workflow": attempt.workflow,
                "attempt_no": attempt.attempt_no,
                "kind": attempt.kind,
                "input": leased.inputs.get(attempt.run_id),
                "tenant_id": attempt.tenant_id,
                "tenant_active_leases": tenant_count,
                "priority": attempt.priority,
                "checkpoint": None
                if checkpoint is None
                else {"checkpoint_id": checkpoint.checkpoint_id, "state": checkpoint.state},
                "resume_value": attempt.resume_value,
                "has_resume_value": attempt.has_resume_value,
                "trace": trace_view(child),
                "_recovery_ms": recovery_ms,
            }
        )
    return dispatched


async def _live_lease(
    conn: AsyncConnection,
    rt: Runtime,
    *,
    worker_id: str,
    attempt: AttemptRecord,
    lease_id: str | None,
    now: int,
) -> LeaseRecord:
    """The caller's live lease on the attempt; 409 without naming the owner otherwise (G4)."""
    lease = await lease_store.active_for_attempt(conn, attempt.attempt_id)
    return _check_live(rt, attempt, lease, worker_id=worker_id, lease_id=lease_id, now=now)


def _owns(lease: LeaseRecord | None, worker_id: str, lease_id: str | None) -> bool:
    return (
        lease is not None
        and lease.worker_id == worker_id
        and (lease_id is None or lease.lease_id == lease_id)
    )


def _check_live(
    rt: Runtime,
    attempt: AttemptRecord,
    lease: LeaseRecord | None,
    *,
    worker_id: str,
    lease_id: str | None,
    now: int,
) -> LeaseRecord:
    if lease is None or not _owns(lease, worker_id, lease_id):
        rt.metrics.lease_operation(conflicts=1)
        raise Conflict(
            "attempt is not leased by this worker",
            {"attempt_id": attempt.attempt_id, "worker_id": worker_id},
        )
    if lease.lease_expires_at_ms < now:
        rt.metrics.lease_operation(conflicts=1)
        raise Conflict(
            "lease expired", {"attempt_id": attempt.attempt_id, "lease_id": lease.lease_id}
        )
    return lease


def _next_trace(attempt: AttemptRecord) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The attempt's next span: column values to store and the wire view."""
    trace = attempt_trace(attempt)
    if trace is None:
        return {}, None
    child = trace.child()
    values = {"trace_parent_span_id": child.parent_span_id, "trace_span_id": child.span_id}
    return values, trace_view(child)


async def _require_attempt(conn: AsyncConnection, attempt_id: str, *, lock: bool) -> AttemptRecord:
    attempt = await job_store.get_attempt(conn, attempt_id, lock=lock)
    if attempt is None:
        raise NotFound("attempt not found", {"attempt_id": attempt_id})
    return attempt


async def _advance_trace(
    conn: AsyncConnection, attempt: AttemptRecord, now: int
) -> dict[str, Any] | None:
    trace = attempt_trace(attempt)
    if trace is None:
        return None
    child = trace.child()
    await job_store.update_attempt(
        conn,
        attempt.attempt_id,
        {
            "trace_parent_span_id": child.parent_span_id,
            "trace_span_id": child.span_id,
            "updated_at_ms": now,
        },
    )
    return trace_view(child)


async def heartbeat(
    rt: Runtime,
    worker_id: str,
    lease_id: str | None,
    lease_ttl_seconds: int | None,
    *,
    settling: bool = False,
) -> dict[str, Any]:
    """Extend a live lease to now + TTL; expired, foreign or revoked leases answer 409 (G5).

    ``settling``: the holder says the attempt's outcome is decided and only the ack remains;
    the lease is marked from then on (see ``oris_runtime_unacked_finished_attempts``)."""
    require_id("worker_id", worker_id)
    if lease_id is None or not lease_id.strip():
        raise InvalidArgument("lease_id must not be empty")
    ttl = check_lease_ttl(lease_ttl_seconds, rt.settings.lease_ttl_seconds)
    rt.metrics.lease_operation()
    return await _extend_lease(rt, worker_id, lease_id, ttl, settling)


@retried
async def _extend_lease(
    rt: Runtime, worker_id: str, lease_id: str, ttl: float, settling: bool
) -> dict[str, Any]:
    async with rt.db.write() as conn:
        now = now_ms()
        # The attempt's row, then the lease's (the lock order): both are written below.
        locked = await lease_store.lock_with_attempt(conn, lease_id)
        if locked is None:
            raise NotFound("lease not found", {"lease_id": lease_id})
        lease, attempt = locked
        if lease.worker_id != worker_id:
            rt.metrics.lease_conflict()
            raise Conflict("lease ownership mismatch", {"lease_id": lease_id})
        if lease.state != LeaseState.ACTIVE:
            rt.metrics.lease_conflict()
            reason = (
                "revoked: the job was cancelled or the attempt timed out"
                if lease.state == LeaseState.REVOKED
                else lease.state
            )
            raise Conflict(
                f"lease is no longer active ({reason})",
                {"lease_id": lease_id, "state": lease.state},
            )
        if lease.lease_expires_at_ms < now:
            rt.metrics.lease_conflict()
            raise Conflict("lease expired", {"lease_id": lease_id})
        expires = now + int(ttl * 1000)
        if not await lease_store.extend(
            conn, lease, now_ms=now, expires_at_ms=expires, settling=settling
        ):
            rt.metrics.lease_conflict()
            raise Conflict(
                f"lease heartbeat version conflict for lease: {lease_id}", {"lease_id": lease_id}
            )
        trace = await _advance_trace(conn, attempt, now)
    return {
        "worker_id": worker_id,
        "lease_id": lease_id,
        "lease_expires_at": to_rfc3339(expires),
        "trace": trace,
        "version": lease.version + 1,
        "attempt_id": lease.attempt_id,
    }


@dataclass(frozen=True, slots=True)
class StepReport:
    """A worker's ``report-step`` body."""

    attempt_id: str | None
    action_id: str | None
    status: str | None
    dedupe_token: str | None
    lease_id: str | None = None
    checkpoint: dict[str, Any] | None = None


def _require_text(field: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise InvalidArgument(f"{field} must not be empty")
    if len(value) > 256:
        raise InvalidArgument(f"{field} must be 256 characters or fewer")
    return value


@retried
async def report_step(rt: Runtime, worker_id: str, report: StepReport) -> dict[str, Any]:
    """Record a finished step (deduped by token) and, with ``checkpoint``, persist progress."""
    require_id("worker_id", worker_id)
    attempt_id = _require_text("attempt_id", report.attempt_id)
    action_id = _require_text("action_id", report.action_id)
    status = _require_text("status", report.status)
    token = _require_text("dedupe_token", report.dedupe_token)
    if report.checkpoint is not None and "state" not in report.checkpoint:
        raise InvalidArgument("checkpoint.state is required when checkpoint is given")
    payload_hash = hashlib.sha256(
        dump_json([action_id, status, report.checkpoint]).encode()
    ).hexdigest()
    async with rt.db.write() as conn:
        now = now_ms()
        attempt = await _require_attempt(conn, attempt_id, lock=True)
        existing = await _existing_report(conn, attempt_id, token)
        if existing is not None:
            if existing[0] != payload_hash:
                raise Conflict(
                    f"dedupe_token '{token}' already used with different payload for attempt "
                    f"'{attempt_id}'"
                )
            return {
                "attempt_id": attempt_id,
                "status": "reported_idempotent",
                "next_retry_at": None,
                "next_attempt_no": None,
                "trace": trace_view(attempt_trace(attempt)),
                "checkpoint_id": existing[1],
            }
        await _live_lease(
            conn, rt, worker_id=worker_id, attempt=attempt, lease_id=report.lease_id, now=now
        )
        checkpoint_id = None
        if report.checkpoint is not None:
            step_name = report.checkpoint.get("step") or action_id
            checkpoint = await job_store.insert_checkpoint(
                conn,
                thread_id=attempt.run_id,
                attempt_id=attempt_id,
                step=str(step_name),
                state=report.checkpoint["state"],
                now_ms=now,
            )
            checkpoint_id = checkpoint.checkpoint_id
        await insert_ignore(
            conn,
            step_reports,
            {
                "worker_id": worker_id,
                "attempt_id": attempt_id,
                "action_id": action_id,
                "status": status,
                "dedupe_token": token,
                "payload_hash": payload_hash,
                "checkpoint_id": checkpoint_id,
                "created_at_ms": now,
            },
        )
        await events.record(
            conn,
            thread_id=attempt.run_id,
            event_type="step_reported",
            attempt_id=attempt_id,
            checkpoint_id=checkpoint_id,
            details={"action_id": action_id, "status": status, "worker_id": worker_id},
            now_ms=now,
        )
        trace = await _advance_trace(conn, attempt, now)
    return {
        "attempt_id": attempt_id,
        "status": "reported",
        "next_retry_at": None,
        "next_attempt_no": None,
        "trace": trace,
        "checkpoint_id": checkpoint_id,
    }


async def _existing_report(
    conn: AsyncConnection, attempt_id: str, token: str
) -> tuple[str | None, str | None] | None:
    row = (
        await conn.execute(
            select(step_reports.c.payload_hash, step_reports.c.checkpoint_id).where(
                step_reports.c.attempt_id == attempt_id, step_reports.c.dedupe_token == token
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True, slots=True)
class AckCommand:
    """A worker's ``ack`` body."""

    attempt_id: str | None
    terminal_status: str | None
    retry_policy: dict[str, Any] | None = None
    lease_id: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    interrupt: dict[str, Any] | None = None
    wake_at: str | None = None


def _check_ack(command: AckCommand) -> tuple[RetryPolicy | None, str]:
    """Validate an ack before any read; returns its retry policy and the hash repeats match."""
    if command.attempt_id is None or not command.attempt_id.strip():
        raise InvalidArgument("attempt_id must not be empty")
    policy = parse_retry_policy(command.retry_policy)
    status = command.terminal_status
    if status not in ACK_STATUSES:
        raise InvalidArgument(
            "terminal_status must be one of: completed|failed|cancelled|interrupted|sleeping"
        )
    if status == "interrupted" and (command.interrupt is None or "value" not in command.interrupt):
        raise InvalidArgument("interrupt.value is required when terminal_status is interrupted")
    hashed: list[Any] = [
        status,
        command.retry_policy,
        command.output,
        command.error,
        command.interrupt,
    ]
    if status == "sleeping":
        if command.wake_at is None:
            raise InvalidArgument("wake_at is required when terminal_status is sleeping")
        wake = parse_rfc3339("wake_at", command.wake_at)
        if wake - now_ms() > MAX_DELAY_MS:
            raise InvalidArgument("wake_at must be at most 365 days ahead")
        hashed.append(wake)
    ack_hash = hashlib.sha256(dump_json(hashed).encode()).hexdigest()
    return policy, ack_hash


def _batchable(command: AckCommand, policy: RetryPolicy | None) -> bool:
    """Whether an ack can take :func:`_complete_many` (a plain completion)."""
    return command.terminal_status == "completed" and policy is None


async def ack(rt: Runtime, worker_id: str, command: AckCommand) -> dict[str, Any]:
    """Finish the caller's lease: complete, cancel, interrupt, retry or dead-letter."""
    require_id("worker_id", worker_id)
    policy, ack_hash = _check_ack(command)
    assert command.attempt_id is not None
    if _batchable(command, policy):
        # The common case takes the batch path (one statement on PostgreSQL); anything it
        # leaves (a repeat, a foreign or expired lease, an unknown attempt) is decided below.
        done = await _complete_many(rt, worker_id, [(0, command, ack_hash)])
        if done:
            return done[0]
    return await _ack_one(rt, worker_id, command, policy, ack_hash)


@retried
async def _ack_one(
    rt: Runtime,
    worker_id: str,
    command: AckCommand,
    policy: RetryPolicy | None,
    ack_hash: str,
) -> dict[str, Any]:
    """Every kind of ack, repeats and fencing included, in a transaction of its own."""
    assert command.attempt_id is not None
    async with rt.db.write() as conn:
        now = now_ms()
        # The job's row, then the attempt's (the lock order): _apply_ack writes both.
        attempt = await job_store.lock_attempt(conn, command.attempt_id)
        if attempt is None:
            raise NotFound("attempt not found", {"attempt_id": command.attempt_id})
        active = await lease_store.active_for_attempt(conn, attempt.attempt_id)
        if not _owns(active, worker_id, command.lease_id):
            repeated = await _repeated_ack(
                conn, attempt, worker_id, command.lease_id, ack_hash, active
            )
            if repeated is not None:
                return repeated
        lease = _check_live(
            rt, attempt, active, worker_id=worker_id, lease_id=command.lease_id, now=now
        )
        trace_values, trace = _next_trace(attempt)
        response, outcome = await _apply_ack(
            conn, rt, attempt, command, policy, now, worker_id, trace_values
        )
        response["trace"] = trace
        if not await lease_store.release(
            conn, lease, now_ms=now, ack_hash=ack_hash, response=response
        ):
            rt.metrics.lease_conflict()
            raise Conflict(
                "lease changed concurrently; ack refused", {"attempt_id": attempt.attempt_id}
            )
    if outcome in TERMINAL_STATUSES:
        rt.metrics.terminal(outcome)
    elif outcome == AckOutcome.RETRY_SCHEDULED:
        rt.metrics.retry_scheduled()
    return response


AckResult = tuple[dict[str, Any] | None, OrisError | None]


async def ack_many(rt: Runtime, worker_id: str, commands: list[AckCommand]) -> list[AckResult]:
    """Acks of many attempts in one call; each gets its own answer or error.

    Plain ``completed`` acks of live leases (the common case) are applied together in one
    transaction (one write statement on PostgreSQL). Anything else (failures, interrupts, retry
    policies, repeats, expired or foreign leases) then goes through the single-ack code one
    at a time, so it behaves exactly as the single-ack endpoint.
    """
    require_id("worker_id", worker_id)
    return await _apply_acks(rt, worker_id, commands, _sort_acks(commands))


async def _apply_acks(
    rt: Runtime, worker_id: str, commands: list[AckCommand], sorted_acks: _SortedAcks
) -> list[AckResult]:
    """The batch path in a transaction of its own, then the rest one at a time."""
    if sorted_acks.batch:
        sorted_acks.answered(await _complete_many(rt, worker_id, sorted_acks.batch))
    return await _answer_rest(rt, worker_id, commands, sorted_acks)


@dataclass(slots=True)
class _SortedAcks:
    """Acks checked and split into the batch path and the rest, with the answers so far."""

    results: dict[int, AckResult]
    checked: dict[int, tuple[RetryPolicy | None, str]]
    batch: list[tuple[int, AckCommand, str]]

    def answered(self, done: dict[int, dict[str, Any]]) -> None:
        for index, response in done.items():
            self.results[index] = (response, None)


def _sort_acks(commands: list[AckCommand]) -> _SortedAcks:
    if not 1 <= len(commands) <= MAX_ACK_BATCH:
        raise InvalidArgument(f"acks must hold between 1 and {MAX_ACK_BATCH} items")
    sorted_acks = _SortedAcks({}, {}, [])
    seen: set[str] = set()
    for index, command in enumerate(commands):
        try:
            policy, ack_hash = sorted_acks.checked[index] = _check_ack(command)
        except OrisError as error:
            sorted_acks.results[index] = (None, error)
            continue
        attempt_id = str(command.attempt_id)
        if _batchable(command, policy) and attempt_id not in seen:
            seen.add(attempt_id)
            sorted_acks.batch.append((index, command, ack_hash))
    return sorted_acks


async def _answer_rest(
    rt: Runtime, worker_id: str, commands: list[AckCommand], sorted_acks: _SortedAcks
) -> list[AckResult]:
    """Answer what the batch path left through the single-ack code; all answers in order."""
    results = sorted_acks.results
    for index, command in enumerate(commands):
        if index in results:
            continue
        try:
            answer = await _ack_one(rt, worker_id, command, *sorted_acks.checked[index])
            results[index] = (answer, None)
        except OrisError as error:
            results[index] = (None, error)
    return [results[index] for index in range(len(commands))]


@retried
async def _complete_many(
    rt: Runtime, worker_id: str, batch: list[tuple[int, AckCommand, str]]
) -> dict[int, dict[str, Any]]:
    """Complete the attempts whose live lease the worker holds; the others are left for
    :func:`_ack_one` to answer. Returns the responses by position in the request."""
    async with rt.db.write() as conn:
        done = await _complete_in(conn, rt, worker_id, batch)
    _count_completed(rt, done)
    return done


def _count_completed(rt: Runtime, done: dict[int, dict[str, Any]]) -> None:
    for _ in done:
        rt.metrics.terminal(AttemptStatus.COMPLETED.value)


async def _complete_in(
    conn: AsyncConnection, rt: Runtime, worker_id: str, batch: list[tuple[int, AckCommand, str]]
) -> dict[int, dict[str, Any]]:
    """:func:`_complete_many`'s work inside the caller's transaction."""
    done: dict[int, dict[str, Any]] = {}
    now = now_ms()
    ids = [str(command.attempt_id) for _, command, _ in batch]
    found, live = await batch_store.lock_for_completion(conn, ids)
    completions: list[batch_store.Completion] = []
    transitions: list[dict[str, Any]] = []
    for index, command, ack_hash in batch:
        attempt = found.get(str(command.attempt_id))
        lease = live.get(str(command.attempt_id))
        if (
            attempt is None
            or lease is None
            or not _owns(lease, worker_id, command.lease_id)
            or lease.lease_expires_at_ms < now
        ):
            continue
        trace_values, trace = _next_trace(attempt)
        error = None if command.error is None else dump_json(command.error)
        response = {
            "attempt_id": attempt.attempt_id,
            "next_retry_at": None,
            "next_attempt_no": attempt.attempt_no,
            "status": AttemptStatus.COMPLETED.value,
            "trace": trace,
        }
        completions.append(
            batch_store.Completion(
                attempt_id=attempt.attempt_id,
                thread_id=attempt.run_id,
                lease_id=lease.lease_id,
                new_lease_version=lease.version + 1,
                output_json=None if command.output is None else dump_json(command.output),
                job_output_json=dump_json(command.output),
                error_json=error,
                parent_span_id=trace_values.get("trace_parent_span_id"),
                span_id=trace_values.get("trace_span_id"),
                ack_hash=ack_hash,
                response_json=dump_json(response),
            )
        )
        transitions.append(
            {
                "thread_id": attempt.run_id,
                "event_type": "attempt_completed",
                "attempt_id": attempt.attempt_id,
                "details": {"worker_id": worker_id},
                "now_ms": now,
            }
        )
        done[index] = response
    await batch_store.complete_attempts(conn, completions, now_ms=now, events=transitions)
    events.note(conn, transitions)
    return done


async def _repeated_ack(
    conn: AsyncConnection,
    attempt: AttemptRecord,
    worker_id: str,
    lease_id: str | None,
    ack_hash: str,
    active: LeaseRecord | None,
) -> dict[str, Any] | None:
    """The stored answer when this worker already acked this lease with the same body."""
    previous = await lease_store.latest_for_attempt_and_worker(conn, attempt.attempt_id, worker_id)
    if previous is None or previous.state != LeaseState.RELEASED or previous.ack_hash is None:
        return None
    if lease_id is not None and previous.lease_id != lease_id:
        return None
    if active is not None and active.worker_id == worker_id:
        return None  # the worker holds a newer lease: this is a new ack, not a repeat
    if previous.ack_hash != ack_hash:
        raise Conflict(
            "attempt was already acked with a different outcome", {"attempt_id": attempt.attempt_id}
        )
    return dict(previous.ack_response)


async def _apply_ack(
    conn: AsyncConnection,
    rt: Runtime,
    attempt: AttemptRecord,
    command: AckCommand,
    policy: RetryPolicy | None,
    now: int,
    worker_id: str,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    status = command.terminal_status
    base = {
        "attempt_id": attempt.attempt_id,
        "next_retry_at": None,
        "next_attempt_no": attempt.attempt_no,
    }
    if policy is not None:
        await job_store.update_attempt(conn, attempt.attempt_id, _policy_columns(policy))
    if status == "interrupted":
        assert command.interrupt is not None
        interrupt = await interrupt_store.insert(
            conn,
            thread_id=attempt.run_id,
            attempt_id=attempt.attempt_id,
            step=command.interrupt.get("step"),
            value=command.interrupt["value"],
            now_ms=now,
        )
        await _finish(
            conn, attempt, AttemptStatus.INTERRUPTED, now, output=None, error=None, extra=extra
        )
        await events.record(
            conn,
            thread_id=attempt.run_id,
            event_type="interrupt_opened",
            attempt_id=attempt.attempt_id,
            details={"interrupt_id": interrupt.interrupt_id, "worker_id": worker_id},
            now_ms=now,
        )
        return {
            **base,
            "status": AckOutcome.INTERRUPTED.value,
            "interrupt_id": interrupt.interrupt_id,
        }, "interrupted"
    if status == "sleeping":
        assert command.wake_at is not None
        return await _sleep(conn, attempt, parse_rfc3339("wake_at", command.wake_at), now, extra)
    if status == "failed":
        return await fail_attempt(
            conn,
            rt,
            attempt,
            policy=policy,
            error=command.error,
            now=now,
            reason=DeadLetterReason.TERMINAL_FAILED,
            worker_id=worker_id,
            extra=extra,
        )
    outcome = AttemptStatus(str(status))
    await _finish(
        conn, attempt, outcome, now, output=command.output, error=command.error, extra=extra
    )
    await events.record(
        conn,
        thread_id=attempt.run_id,
        event_type=f"attempt_{status}",
        attempt_id=attempt.attempt_id,
        details={"worker_id": worker_id},
        now_ms=now,
    )
    return {**base, "status": status}, str(status)


async def _sleep(
    conn: AsyncConnection, attempt: AttemptRecord, wake: int, now: int, extra: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """A durable sleep: the attempt is queued again, dispatchable from ``wake`` on (the same
    column a retry's backoff uses), and resumes from its newest checkpoint. The attempt number
    stays: a sleep is not a failure and costs no retry."""
    wake = max(wake, now)
    await job_store.update_attempt(
        conn,
        attempt.attempt_id,
        {
            **extra,
            "status": AttemptStatus.QUEUED.value,
            "available_at_ms": wake,
            "started_at_ms": None,
            "updated_at_ms": now,
        },
    )
    status = JobStatus.SCHEDULED if wake > now else JobStatus.QUEUED
    await job_store.update_job(
        conn, attempt.run_id, {"status": status.value, "run_at_ms": wake, "updated_at_ms": now}
    )
    await events.record(
        conn,
        thread_id=attempt.run_id,
        event_type="attempt_sleeping",
        attempt_id=attempt.attempt_id,
        details={"wake_at": to_rfc3339(wake)},
        now_ms=now,
    )
    return {
        "attempt_id": attempt.attempt_id,
        "next_retry_at": None,
        "next_attempt_no": attempt.attempt_no,
        "status": AckOutcome.SLEEPING.value,
        "wake_at": to_rfc3339(wake),
    }, AckOutcome.SLEEPING.value


def _policy_columns(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "retry_strategy": policy.strategy.value,
        "retry_backoff_ms": policy.backoff_ms,
        "retry_max_backoff_ms": policy.max_backoff_ms,
        "retry_multiplier": policy.multiplier,
        "retry_max_retries": policy.max_retries,
    }


async def _finish(
    conn: AsyncConnection,
    attempt: AttemptRecord,
    status: AttemptStatus,
    now: int,
    *,
    output: Any,
    error: Any,
    extra: dict[str, Any] | None = None,
) -> None:
    """Move the attempt to a final status and its job to the matching one."""
    values: dict[str, Any] = {
        **(extra or {}),
        "status": status.value,
        "finished_at_ms": now,
        "updated_at_ms": now,
        "retry_at_ms": None,
    }
    if output is not None:
        values["output_json"] = dump_json(output)
    if error is not None:
        values["error_json"] = dump_json(error)
    await job_store.update_attempt(conn, attempt.attempt_id, values)
    job_values: dict[str, Any] = {"status": job_status_for(status).value, "updated_at_ms": now}
    if status is AttemptStatus.COMPLETED:
        job_values["output_json"] = dump_json(output)
    if status in (AttemptStatus.COMPLETED, AttemptStatus.INTERRUPTED):
        # The job's error is its current execution's: a retried one's error is history.
        job_values["error_json"] = None
    if error is not None:
        job_values["error_json"] = dump_json(error)
    await job_store.update_job(conn, attempt.run_id, job_values)


async def fail_attempt(
    conn: AsyncConnection,
    rt: Runtime,
    attempt: AttemptRecord,
    *,
    policy: RetryPolicy | None,
    error: dict[str, Any] | None,
    now: int,
    reason: DeadLetterReason,
    worker_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """A failure: book a retry when the policy allows it, otherwise dead-letter the attempt."""
    effective = policy
    if effective is None and attempt.retry_policy is not None:
        effective = RetryPolicy.from_json(attempt.retry_policy)
    if effective is None:
        job = await job_store.get_job(conn, attempt.run_id)
        if job is not None and job.retry_policy is not None:
            effective = RetryPolicy.from_json(job.retry_policy)
    retryable = not (isinstance(error, dict) and error.get("retryable") is False)
    base = {"attempt_id": attempt.attempt_id}
    if (
        effective is not None
        and retryable
        and effective.allows_retry_after(attempt.attempt_no - attempt.retry_base_no)
    ):
        delay = effective.delay_ms(attempt.attempt_no - attempt.retry_base_no)
        if (
            isinstance(error, dict)
            and isinstance(error.get("retry_delay_ms"), int)
            and error["retry_delay_ms"] >= 0
        ):
            delay = min(max(int(error["retry_delay_ms"]), 1), MAX_DELAY_MS)
        due = now + delay
        next_no = max(attempt.attempt_no, 1) + 1
        await job_store.update_attempt(
            conn,
            attempt.attempt_id,
            {
                **(extra or {}),
                "status": AttemptStatus.RETRY_BACKOFF.value,
                "attempt_no": next_no,
                "retry_at_ms": due,
                "available_at_ms": due,
                "started_at_ms": None,
                "error_json": None if error is None else dump_json(error),
                "updated_at_ms": now,
            },
        )
        await dlq_store.add_retry(
            conn,
            attempt_id=attempt.attempt_id,
            attempt_no=next_no,
            strategy=effective.strategy.value,
            backoff_ms=delay,
            max_retries=effective.max_retries,
            scheduled_at_ms=due,
            now_ms=now,
        )
        await job_store.update_job(
            conn,
            attempt.run_id,
            {
                "status": JobStatus.RETRY_BACKOFF.value,
                "error_json": None if error is None else dump_json(error),
                "updated_at_ms": now,
            },
        )
        await events.record(
            conn,
            thread_id=attempt.run_id,
            event_type="retry_scheduled",
            attempt_id=attempt.attempt_id,
            details={
                "next_attempt_no": next_no,
                "delay_ms": delay,
                "reason": reason.value,
                "worker_id": worker_id,
            },
            now_ms=now,
        )
        return {
            **base,
            "status": AckOutcome.RETRY_SCHEDULED.value,
            "next_retry_at": to_rfc3339(due),
            "next_attempt_no": next_no,
        }, AckOutcome.RETRY_SCHEDULED.value
    await _finish(conn, attempt, AttemptStatus.FAILED, now, output=None, error=error, extra=extra)
    await dlq_store.upsert(
        conn,
        attempt_id=attempt.attempt_id,
        run_id=attempt.run_id,
        attempt_no=attempt.attempt_no,
        reason=reason.value,
        error=error,
        now_ms=now,
        workflow=attempt.workflow,
        tenant_id=attempt.tenant_id,
    )
    await events.record(
        conn,
        thread_id=attempt.run_id,
        event_type="dead_lettered",
        attempt_id=attempt.attempt_id,
        details={"reason": reason.value, "attempt_no": attempt.attempt_no, "worker_id": worker_id},
        now_ms=now,
    )
    return {
        **base,
        "status": AckOutcome.FAILED.value,
        "next_retry_at": None,
        "next_attempt_no": attempt.attempt_no,
    }, AckOutcome.FAILED.value
