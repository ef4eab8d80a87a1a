"""Retention: finished jobs are deleted with every row that belongs to them.

The maintenance loop of every replica purges jobs past their status's retention; an admin can
purge by hand (``POST /v1/jobs/purge``), first as a dry run and optionally reading each job's
rows to archive them before they are deleted. Each batch is one short transaction of at most
``retention_batch_size`` jobs (never more than 1,000), chosen from the (status, updated_at_ms)
index with ``SKIP LOCKED`` on PostgreSQL, and deleted with its guard in the ``WHERE`` clause.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import InvalidArgument
from oris.domain.states import JobStatus
from oris.services import audit
from oris.services.context import RequestContext
from oris.services.runtime import Runtime
from oris.services.transactions import retried
from oris.store import retention as retention_store

log = logging.getLogger("oris.retention")
MAX_BATCH = 1000
PURGEABLE_STATUSES = retention_store.PURGEABLE_STATUSES


def retention_seconds(rt: Runtime) -> dict[str, float]:
    """Each purgeable status's retention; 0 keeps those jobs forever."""
    settings = rt.settings
    return {
        JobStatus.COMPLETED.value: settings.retention_completed_seconds,
        JobStatus.CANCELLED.value: settings.retention_cancelled_seconds,
        JobStatus.FAILED.value: settings.retention_dead_lettered_seconds,
    }


@retried
async def sweep(rt: Runtime) -> dict[str, int]:
    """One retention pass: at most one batch per status; returns what it deleted."""
    purged: dict[str, int] = {}
    batch = min(rt.settings.retention_batch_size, MAX_BATCH)
    for status, seconds in retention_seconds(rt).items():
        if seconds <= 0:
            continue
        cutoff = now_ms() - int(seconds * 1000)
        # Most passes find nothing: look first with one index probe in a read transaction,
        # so an idle retention never takes the write lock (SQLite's single writer).
        async with rt.db.read() as conn:
            due = await retention_store.expired_jobs(conn, status=status, cutoff_ms=cutoff, limit=1)
        if not due:
            continue
        async with rt.db.write() as conn:
            chosen = await retention_store.expired_jobs(
                conn, status=status, cutoff_ms=cutoff, limit=batch, lock=True
            )
            deleted = await retention_store.delete_jobs(
                conn, thread_ids=chosen, status=status, cutoff_ms=cutoff
            )
            if deleted:
                await audit.write(
                    conn,
                    RequestContext.internal("retention"),
                    action="job.purge",
                    resource_type="job",
                    resource_id=None,
                    details={
                        "trigger": "retention",
                        "status": status,
                        "count": len(deleted),
                        "older_than_seconds": seconds,
                        "cutoff": to_rfc3339(cutoff),
                    },
                )
        if deleted:
            rt.metrics.purged(status, len(deleted))
            purged[status] = len(deleted)
            log.info("purged finished jobs", extra={"status": status, "count": len(deleted)})
    return purged


@dataclass(frozen=True, slots=True)
class PurgeCommand:
    """A manual purge: jobs in ``status`` that finished more than ``older_than_seconds``
    ago, at most ``limit`` of them, optionally only among ``thread_ids``."""

    status: str
    older_than_seconds: int
    dry_run: bool = False
    limit: int = MAX_BATCH
    thread_ids: Sequence[str] | None = None
    include_rows: bool = False


def _check(command: PurgeCommand) -> None:
    if command.status not in PURGEABLE_STATUSES:
        raise InvalidArgument(
            f"status must be one of: {', '.join(sorted(PURGEABLE_STATUSES))} "
            "(live work is never purged)",
            {"status": command.status},
        )
    if command.older_than_seconds < 0:
        raise InvalidArgument("older_than_seconds must be 0 or more")
    if not 1 <= command.limit <= MAX_BATCH:
        raise InvalidArgument(f"limit must be between 1 and {MAX_BATCH}")
    if command.thread_ids is not None and len(command.thread_ids) > MAX_BATCH:
        raise InvalidArgument(f"thread_ids may name at most {MAX_BATCH} jobs")
    if command.include_rows and not command.dry_run:
        raise InvalidArgument(
            "include_rows needs dry_run: read the rows first, archive them, then purge "
            "those thread_ids"
        )


def archive_line(thread_id: str, tables: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One job as one archive line: its thread id and its rows by table."""
    return {"thread_id": thread_id, "tables": tables}


@retried
async def purge(rt: Runtime, ctx: RequestContext, command: PurgeCommand) -> dict[str, Any]:
    """Purge (or with ``dry_run`` only name) one batch of expired jobs, audited with the
    count. A dry run also answers how many jobs match in all (``matched``)."""
    _check(command)
    now = now_ms()
    cutoff = now - command.older_than_seconds * 1000
    ids = None if command.thread_ids is None else list(dict.fromkeys(command.thread_ids))
    answer: dict[str, Any] = {
        "status": command.status,
        "older_than_seconds": command.older_than_seconds,
        "cutoff": to_rfc3339(cutoff),
        "dry_run": command.dry_run,
    }
    if command.dry_run:
        async with rt.db.read() as conn:
            chosen = await retention_store.expired_jobs(
                conn,
                status=command.status,
                cutoff_ms=cutoff,
                limit=command.limit,
                thread_ids=ids,
            )
            matched = (
                len(chosen)
                if ids is not None
                else await retention_store.count_expired(
                    conn, status=command.status, cutoff_ms=cutoff
                )
            )
            rows = await retention_store.export_rows(conn, chosen) if command.include_rows else {}
        answer.update(count=len(chosen), matched=matched, thread_ids=chosen)
        answer["more"] = matched > len(chosen)
        if command.include_rows:
            answer["jobs"] = [archive_line(thread_id, rows[thread_id]) for thread_id in chosen]
        return answer
    async with rt.db.write() as conn:
        chosen = await retention_store.expired_jobs(
            conn,
            status=command.status,
            cutoff_ms=cutoff,
            limit=command.limit,
            thread_ids=ids,
            lock=True,
        )
        deleted = await retention_store.delete_jobs(
            conn, thread_ids=chosen, status=command.status, cutoff_ms=cutoff
        )
        await audit.write(
            conn,
            ctx,
            action="job.purge",
            resource_type="job",
            resource_id=None,
            details={
                "trigger": "manual",
                "status": command.status,
                "count": len(deleted),
                "older_than_seconds": command.older_than_seconds,
                "cutoff": to_rfc3339(cutoff),
                "by_thread_ids": ids is not None,
            },
        )
    if deleted:
        rt.metrics.purged(command.status, len(deleted))
    answer.update(count=len(deleted), thread_ids=deleted, more=len(chosen) == command.limit)
    return answer
