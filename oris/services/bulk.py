"""Bulk operator actions: cancel many jobs, replay many dead letters, selected by a filter.

Each item goes through the single-item use case (``jobs.cancel``,
``resumption.replay_dead_letter``) in its own transaction, so the guards, the incident freeze
and the per-item audit row are exactly those of a single action. The bulk request itself is
audited as one more row carrying the filter, the count and the ids it changed. A dry run
selects the same ids and changes nothing (and writes no audit row).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from oris.domain.errors import InvalidArgument, OrisError
from oris.domain.states import JobStatus, ReplayStatus
from oris.services import audit, jobs, resumption
from oris.services.context import RequestContext
from oris.services.incidents import check_freeze
from oris.services.jobs import BULK_DEFAULT_LIMIT, BULK_MAX_LIMIT, JobQuery
from oris.services.resumption import DeadLetterQuery
from oris.store import dead_letters as dlq_store
from oris.store import jobs as job_store
from oris.store.database import Database
from oris.store.dead_letters import DeadLetterFilter
from oris.store.jobs import JobFilter

CANCELLABLE = {
    JobStatus.QUEUED.value,
    JobStatus.SCHEDULED.value,
    JobStatus.RUNNING.value,
    JobStatus.RETRY_BACKOFF.value,
    JobStatus.INTERRUPTED.value,
}
CANCEL_ACTION = "job.cancel_bulk"
REPLAY_ACTION = "dlq.replay_bulk"


def _selection(
    selected: list[str], resolved: int, dry_run: bool
) -> tuple[list[str], dict[str, Any]]:
    """The ids a bulk action will act on (read one past ``resolved`` to know whether more
    matched) and the head of its answer."""
    chosen = selected[:resolved]
    return chosen, {
        "dry_run": dry_run,
        "matched": len(chosen),
        "more": len(selected) > resolved,
        "limit": resolved,
    }


def bulk_limit(value: int | None) -> int:
    """How many items one bulk request may touch: default 1,000, at most 10,000 (400 above)."""
    if value is None:
        return BULK_DEFAULT_LIMIT
    if not 1 <= value <= BULK_MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {BULK_MAX_LIMIT}")
    return value


def _job_filter_view(where: JobFilter) -> dict[str, Any]:
    return {
        "status": where.status,
        "workflow": where.workflow,
        "tenant_id": where.tenant_id,
        "created_after_ms": where.created_after_ms,
        "created_before_ms": where.created_before_ms,
        "thread_ids": None if where.thread_ids is None else list(where.thread_ids),
    }


def _dlq_filter_view(where: DeadLetterFilter) -> dict[str, Any]:
    return {
        "status": where.replay_status,
        "workflow": where.workflow,
        "tenant_id": where.tenant_id,
        "created_after_ms": where.dead_after_ms,
        "created_before_ms": where.dead_before_ms,
        "thread_ids": None if where.thread_ids is None else list(where.thread_ids),
    }


def _failure(key: str, item: str, error: OrisError) -> dict[str, Any]:
    return {key: item, "code": error.code.value, "message": error.message}


async def cancel_jobs(
    db: Database,
    ctx: RequestContext,
    query: JobQuery,
    *,
    limit: int | None,
    dry_run: bool,
    reason: str | None,
) -> dict[str, Any]:
    """Cancel the live jobs the filter selects (oldest first, at most ``limit``).

    At least one filter is required: an empty one would cancel everything."""
    resolved = bulk_limit(limit)
    where = query.validated(statuses=CANCELLABLE)
    if where == JobFilter():
        raise InvalidArgument(
            "a bulk cancel needs at least one filter "
            "(workflow, tenant_id, status, schedule_id, created_after, created_before or "
            "thread_ids)"
        )
    selection = where if where.status is not None else replace(where, statuses=tuple(CANCELLABLE))
    async with db.read() as conn:
        selected = await job_store.select_thread_ids(conn, where=selection, limit=resolved + 1)
    selected, answer = _selection(selected, resolved, dry_run)
    more = answer["more"]
    if dry_run:
        return {**answer, "count": len(selected), "thread_ids": selected, "failed": []}
    cancelled: list[str] = []
    failed: list[dict[str, Any]] = []
    for thread_id in selected:
        try:
            await jobs.cancel(db, ctx, thread_id, reason)
        except OrisError as error:
            failed.append(_failure("thread_id", thread_id, error))
            continue
        cancelled.append(thread_id)
    await audit.record(
        db,
        ctx,
        action=CANCEL_ACTION,
        resource_type="jobs",
        resource_id=None,
        result="success",
        status_code=200,
        details={
            "count": len(cancelled),
            "thread_ids": cancelled,
            "failed": failed,
            "filter": _job_filter_view(where),
            "limit": resolved,
            "more": more,
            "reason": reason,
        },
    )
    return {**answer, "count": len(cancelled), "thread_ids": cancelled, "failed": failed}


async def replay_dead_letters(
    db: Database,
    ctx: RequestContext,
    query: DeadLetterQuery,
    *,
    limit: int | None,
    dry_run: bool,
) -> dict[str, Any]:
    """Replay the pending dead letters the filter selects (oldest first, at most ``limit``).

    The incident freeze applies as to one replay: while an incident is open a real run needs
    an override reason, and is refused before any entry is touched without one."""
    resolved = bulk_limit(limit)
    where = query.validated()
    if where.replay_status not in (None, ReplayStatus.PENDING.value):
        raise InvalidArgument("only pending dead letters can be replayed: status must be pending")
    where = replace(where, replay_status=ReplayStatus.PENDING.value)
    override = None
    async with db.read() as conn:
        if not dry_run:
            override = await check_freeze(conn, ctx, "dlq.replay")
        selected = await dlq_store.select_attempt_ids(conn, where=where, limit=resolved + 1)
    selected, answer = _selection(selected, resolved, dry_run)
    more = answer["more"]
    if dry_run:
        return {**answer, "count": len(selected), "attempt_ids": selected, "failed": []}
    replayed: list[str] = []
    thread_ids: list[str] = []
    failed: list[dict[str, Any]] = []
    for attempt_id in selected:
        try:
            result = await resumption.replay_dead_letter(db, ctx, attempt_id)
        except OrisError as error:
            failed.append(_failure("attempt_id", attempt_id, error))
            continue
        replayed.append(attempt_id)
        thread_ids.append(str(result["thread_id"]))
    await audit.record(
        db,
        ctx,
        action=REPLAY_ACTION,
        resource_type="dlq",
        resource_id=None,
        result="success",
        status_code=200,
        details={
            "count": len(replayed),
            "attempt_ids": replayed,
            "thread_ids": thread_ids,
            "failed": failed,
            "filter": _dlq_filter_view(where),
            "limit": resolved,
            "more": more,
            **(override or {}),
        },
    )
    return {
        **answer,
        "count": len(replayed),
        "attempt_ids": replayed,
        "thread_ids": thread_ids,
        "failed": failed,
    }
