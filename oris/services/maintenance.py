"""Background maintenance: expire stale leases, apply execution timeouts, purge finished jobs
past their retention.

Runs in every API process. Each pass claims rows with ``SKIP LOCKED`` (PostgreSQL) or under
the single writer lock (SQLite) and changes them with guarded updates, so several replicas
can sweep at once without requeuing the same lease twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.clock import now_ms
from oris.domain.errors import Unavailable
from oris.domain.states import (
    AttemptStatus,
    DeadLetterReason,
    JobStatus,
    LeaseState,
)
from oris.services import events, retention, schedules
from oris.services.runtime import Runtime
from oris.services.scheduler import fail_attempt
from oris.services.transactions import retried
from oris.store import dispatch as dispatch_store
from oris.store import jobs as job_store
from oris.store import leases as lease_store
from oris.store.records import LeaseRecord

log = logging.getLogger("oris.maintenance")
_T = TypeVar("_T")
SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one maintenance pass changed."""

    leases_expired: int
    attempts_timed_out: int
    jobs_due: int = 0
    ticks_queued: int = 0
    jobs_purged: dict[str, int] = field(default_factory=dict)


async def sweep(rt: Runtime) -> SweepResult:
    """One maintenance pass; safe to run concurrently in several processes.

    Each step runs even when an earlier one failed (a failing schedule tick must not stop
    lease expiry or retention); the first failure is raised once every step has run."""
    failures: list[BaseException] = []

    async def step(name: str, work: Callable[[Runtime], Awaitable[_T]], empty: _T) -> _T:
        try:
            return await work(rt)
        except Exception as error:  # one step's failure must not starve the others
            log.warning("maintenance step %s failed: %s", name, error)
            failures.append(error)
            return empty

    expired = await step("lease expiry", _expire_leases, 0)
    timed_out = await step("timeouts", _apply_timeouts, 0)
    due = await step("due scheduled jobs", _promote_due, 0)
    ticks = await step("schedule ticks", _tick_count, 0)
    nothing_purged: dict[str, int] = {}
    purged = await step("retention", retention.sweep, nothing_purged)
    if failures:
        raise failures[0]
    return SweepResult(expired, timed_out, due, ticks, purged)


async def _tick_count(rt: Runtime) -> int:
    return (await schedules.tick(rt)).counts["queued"]


@retried
async def _promote_due(rt: Runtime) -> int:
    """Delayed and sleeping jobs whose time has come show ``queued`` again. Their attempts were
    dispatchable from that instant on already; this only corrects the job's status."""
    async with rt.db.write() as conn:
        return await job_store.promote_due(conn, now_ms=now_ms())


@retried
async def _expire_leases(rt: Runtime) -> int:
    grace_ms = int(rt.settings.lease_grace_seconds * 1000)
    async with rt.db.write() as conn:
        now = now_ms()
        stale = await lease_store.claim_expired(
            conn, expired_before_ms=now - grace_ms, limit=SWEEP_BATCH
        )
        count = 0
        for lease in stale:
            if await _requeue(conn, lease, now):
                count += 1
        if count:
            await rt.db.work.signal(conn)
    if count:
        rt.metrics.lease_expired(count)
        log.info("requeued attempts behind expired leases", extra={"count": count})
    return count


async def _requeue(conn: AsyncConnection, lease: LeaseRecord, now: int) -> bool:
    if not await lease_store.mark_expired(conn, lease, now):
        return False
    attempt = await job_store.get_attempt(conn, lease.attempt_id)
    if attempt is None:
        return False
    # Same attempt id, next attempt number (as upstream); it keeps its place in the queue.
    requeued = await job_store.update_attempt(
        conn,
        attempt.attempt_id,
        {
            "status": AttemptStatus.QUEUED.value,
            "attempt_no": attempt.attempt_no + 1,
            "started_at_ms": None,
            "lease_expired_at_ms": lease.lease_expires_at_ms,
            "updated_at_ms": now,
        },
        expected_statuses=[AttemptStatus.LEASED.value, AttemptStatus.RUNNING.value],
    )
    if not requeued:
        return True
    await job_store.update_job(
        conn, attempt.run_id, {"status": JobStatus.QUEUED.value, "updated_at_ms": now}
    )
    await events.record(
        conn,
        thread_id=attempt.run_id,
        event_type="lease_expired",
        attempt_id=attempt.attempt_id,
        details={
            "lease_id": lease.lease_id,
            "worker_id": lease.worker_id,
            "next_attempt_no": attempt.attempt_no + 1,
        },
        now_ms=now,
    )
    return True


@retried
async def _apply_timeouts(rt: Runtime) -> int:
    outcomes: list[str] = []  # counted once committed: a rolled-back pass is run again
    async with rt.db.write() as conn:
        now = now_ms()
        for attempt in await dispatch_store.timed_out(conn, now_ms=now, limit=SWEEP_BATCH):
            await lease_store.end_active_lease(conn, attempt.attempt_id, LeaseState.REVOKED, now)
            error = {
                "message": f"execution timed out after {attempt.execution_timeout_ms} ms",
                "type": "timeout",
            }
            await events.record(
                conn,
                thread_id=attempt.run_id,
                event_type="attempt_timed_out",
                attempt_id=attempt.attempt_id,
                details={
                    "timeout_ms": attempt.execution_timeout_ms,
                    "on_timeout_status": attempt.timeout_terminal_status,
                },
                now_ms=now,
            )
            if attempt.timeout_terminal_status == "cancelled":
                await job_store.update_attempt(
                    conn,
                    attempt.attempt_id,
                    {
                        "status": AttemptStatus.CANCELLED.value,
                        "finished_at_ms": now,
                        "updated_at_ms": now,
                    },
                )
                await job_store.update_job(
                    conn,
                    attempt.run_id,
                    {
                        "status": JobStatus.CANCELLED.value,
                        "cancel_reason": "execution timeout",
                        "updated_at_ms": now,
                    },
                )
                outcomes.append("cancelled")
            else:
                _, outcome = await fail_attempt(
                    conn,
                    rt,
                    attempt,
                    policy=None,
                    error=error,
                    now=now,
                    reason=DeadLetterReason.EXECUTION_TIMEOUT,
                )
                outcomes.append("failed" if outcome == "failed" else "retry")
    for outcome in outcomes:
        if outcome == "cancelled":
            rt.metrics.timed_out("cancelled")
            rt.metrics.terminal("cancelled")
            continue
        rt.metrics.timed_out("failed")
        if outcome == "failed":
            rt.metrics.terminal("failed")
        else:
            rt.metrics.retry_scheduled()
    return len(outcomes)


class MaintenanceLoop:
    """Owns the background sweep task of one API process."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start sweeping every ``maintenance_interval_seconds``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="oris-maintenance")

    async def stop(self) -> None:
        """Stop and wait for the current pass; safe to call twice."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise

    async def _run(self) -> None:
        interval = self._rt.settings.maintenance_interval_seconds
        next_due = time.monotonic()
        while not self._stopping.is_set():
            lag_ms = max(time.monotonic() - next_due, 0.0) * 1000
            try:
                await sweep(self._rt)
            except Unavailable as error:
                log.warning("maintenance skipped: %s", error.message)
            except Exception:
                log.exception("maintenance pass failed")
            self._rt.metrics.maintenance_ran(lag_ms)
            next_due += interval
            delay = next_due - time.monotonic()
            if delay < 0:
                next_due = time.monotonic()
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
