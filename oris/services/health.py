"""Readiness and the database-backed gauges for ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import Unavailable
from oris.observability.metrics import DatabaseGauges
from oris.services import incidents
from oris.services.runtime import Runtime
from oris.store import dead_letters as dlq_store
from oris.store import dispatch as dispatch_store
from oris.store import health as health_store
from oris.store import incidents as incident_store
from oris.store import jobs as job_store
from oris.store import retention as retention_store
from oris.store import schema
from oris.store import workers as worker_store

WORKERS_SEEN_WINDOW_MS = 60_000
UNACKED_LISTED = 100

log = logging.getLogger("oris.metrics")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Health:
    """Outcome of a readiness check."""

    ok: bool
    body: dict[str, Any]


async def check(rt: Runtime) -> Health:
    """The database answers and is at the code's schema version."""
    backend = rt.db.backend.value
    try:
        status = await schema.schema_status(rt.db)
    except Unavailable as error:
        return Health(False, {"status": "unavailable", "backend": backend, "reason": error.message})
    except Exception as error:  # any driver failure means "not ready", never a 500
        return Health(
            False,
            {
                "status": "unavailable",
                "backend": backend,
                "reason": f"database check failed: {type(error).__name__}",
            },
        )
    body: dict[str, Any] = {
        "status": "ok" if status.at_head else "unavailable",
        "backend": backend,
        "schema_version": status.database_version,
        "code_schema_version": status.code_version,
    }
    if not status.at_head:
        body["reason"] = status.describe(rt.db.backend)
        return Health(False, body)
    try:
        body["incident"] = await incidents.current(rt.db)
    except Exception as error:
        return Health(
            False,
            {
                **body,
                "status": "unavailable",
                "reason": f"database read failed: {type(error).__name__}",
            },
        )
    return Health(True, body)


@dataclass(frozen=True, slots=True)
class GrowingCounts:
    """The two gauges that read every queued attempt, and when they were read."""

    queue_depth: int
    attempts_by_status: dict[str, int]
    read_at: float  # monotonic seconds, when the counts began (what they describe is that old)
    took: float  # seconds the counts took
    tables: TableHealth | None = None


@dataclass(frozen=True, slots=True)
class TableHealth:
    """What retention leaves behind: when the oldest purgeable job of each status finished
    (epoch ms) and how large the tables are."""

    oldest_finished_ms: dict[str, int]
    table_size_bytes: dict[str, int]
    database_size_bytes: int


async def table_health(conn: AsyncConnection) -> TableHealth:
    """The oldest purgeable job per status (one index entry each) and the table sizes."""
    oldest: dict[str, int] = {}
    for status in sorted(retention_store.PURGEABLE_STATUSES):
        finished = await retention_store.oldest_purgeable_ms(conn, status)
        if finished is not None:
            oldest[status] = finished
    sizes, total = await health_store.table_sizes(conn)
    return TableHealth(oldest, sizes, total)


async def growing_counts(rt: Runtime, *, background: bool = False) -> GrowingCounts:
    """Queue depth and attempts by status, each an index scan of every queued row, run
    concurrently on their own connections so they cost the longer of the two, not both;
    the table health alongside (a few index lookups and catalog reads).

    ``background`` counts keep to one core each, leaving the rest to dispatch."""
    started = time.monotonic()
    now = now_ms()

    async def counted(count: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        async with rt.db.read() as conn:
            if background:
                await health_store.on_one_core(conn)
            return await count(conn)

    async with asyncio.TaskGroup() as group:
        queued = group.create_task(counted(lambda conn: dispatch_store.queue_depth(conn, now)))
        statuses = group.create_task(counted(dispatch_store.attempts_by_status))
        tables = group.create_task(counted(table_health))
    took = time.monotonic() - started
    rt.metrics.queue_depth_seen(queued.result())
    return GrowingCounts(queued.result(), statuses.result(), started, took, tables.result())


class CountRefresher:
    """Keeps :class:`GrowingCounts` fresh in the background of one API process, so a scrape
    reads them from memory instead of counting a deep queue while Prometheus waits.

    The counts are re-read every ``metrics_count_interval_seconds``, or ten times as long as
    the last read took if that is longer, each on one core (no parallel workers), so
    refreshing keeps PostgreSQL busy for at most a tenth of two cores' time and never takes
    every core from dispatch at once; a failed count waits as long before the next try. A
    scrape uses the last counts while they are at most three periods old; older ones (the
    database stopped answering, the loop is stalled) are not served: the scrape counts for
    itself, and reports the database down if that fails too."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._latest: GrowingCounts | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Seconds between refreshes; 0 means every scrape counts for itself."""
        return self._rt.settings.metrics_count_interval_seconds

    def start(self) -> None:
        """Start refreshing, unless the interval is 0."""
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="oris-metric-counts")

    async def stop(self) -> None:
        """Stop refreshing; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def fresh(self) -> GrowingCounts | None:
        """The last counts while they are recent enough to serve, else None."""
        latest = self._latest
        if latest is None or self._task is None:
            return None
        if time.monotonic() - latest.read_at > 3 * self._period(latest):
            return None
        return latest

    def _period(self, counts: GrowingCounts) -> float:
        return max(self.interval, 10 * counts.took)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._latest = await growing_counts(self._rt, background=True)
                delay = self._period(self._latest)
            except Exception as error:  # the scrape notices on its own; keep trying
                log.warning("metric counts not refreshed: %s", _first_cause(error))
                delay = max(self.interval, 10 * (time.monotonic() - started))
            await asyncio.sleep(delay)


def _first_cause(error: BaseException) -> str:
    """The first real error inside task-group wrappers, for a one-line log message."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message}"[:300]


async def database_gauges(rt: Runtime, counts: GrowingCounts | None = None) -> DatabaseGauges:
    """Every state gauge; ``counts`` are the refresher's, or None to count now."""
    now = now_ms()
    async with asyncio.TaskGroup() as group:
        counting = None if counts is not None else group.create_task(growing_counts(rt))
        async with rt.db.read() as conn:
            dlq = await dlq_store.count_by_replay_status(conn)
            pending = await health_store.interrupts_pending(conn)
            by_worker = await health_store.active_leases_by(conn, "worker_id", now)
            by_tenant = await health_store.active_leases_by(conn, "tenant_id", now)
            stale = await health_store.stale_leases(conn, now)
            unacked, _ = await health_store.unacked_settled(
                conn, now_ms=now, marked_before_ms=_settled_before(rt, now), limit=0
            )
            dead_tuples, oldest = await health_store.postgres_table_health(conn)
            open_incidents = 0 if await incident_store.current(conn) is None else 1
            workers_seen = await worker_store.count_since(conn, now - WORKERS_SEEN_WINDOW_MS)
            scheduled = await job_store.count_scheduled(conn)
    read = counting.result() if counting is not None else counts
    assert read is not None
    age = 0.0 if counting is not None else time.monotonic() - read.read_at
    tables = read.tables
    finished_ages = (
        {}
        if tables is None
        else {
            status: max(now - finished, 0) / 1000
            for status, finished in tables.oldest_finished_ms.items()
        }
    )
    return DatabaseGauges(
        queue_depth=read.queue_depth,
        dlq_depth=dlq,
        attempts_by_status=read.attempts_by_status,
        interrupts_pending=pending,
        active_leases_by_worker=by_worker,
        active_leases_by_tenant=by_tenant,
        stale_leases=stale,
        unacked_finished_attempts=unacked,
        open_incidents=open_incidents,
        workers_seen=workers_seen,
        scheduled_jobs=scheduled,
        table_dead_tuples=dead_tuples,
        oldest_transaction_age_seconds=oldest,
        counts_age_seconds=age,
        oldest_finished_job_age_seconds=finished_ages,
        table_size_bytes={} if tables is None else tables.table_size_bytes,
        database_size_bytes=None if tables is None else tables.database_size_bytes,
    )


def _settled_before(rt: Runtime, now: int) -> int:
    """Leases marked settling at or before this moment have waited too long for their ack."""
    return now - int(rt.settings.unacked_finished_bound_seconds * 1000)


async def recent_workers(rt: Runtime, window_seconds: float) -> dict[str, Any]:
    """Workers that polled within the window, with the leases they hold now, and the attempts
    whose outcome their worker declared decided too long ago without acking them."""
    now = now_ms()
    async with rt.db.read() as conn:
        rows = await worker_store.seen_since(conn, now - int(window_seconds * 1000), 500)
        held = await health_store.active_leases_by(conn, "worker_id", now)
        unacked, oldest = await health_store.unacked_settled(
            conn, now_ms=now, marked_before_ms=_settled_before(rt, now), limit=UNACKED_LISTED
        )
    return {
        "unacked_finished_bound_seconds": rt.settings.unacked_finished_bound_seconds,
        "unacked_finished_count": unacked,
        "unacked_finished_attempts": [
            {
                "attempt_id": row["attempt_id"],
                "lease_id": row["lease_id"],
                "worker_id": row["worker_id"],
                "settling_since": to_rfc3339(row["settling_since_ms"]),
                "last_heartbeat_at": to_rfc3339(row["heartbeat_at_ms"]),
                "lease_version": row["version"],
            }
            for row in oldest
        ],
        "window_seconds": window_seconds,
        "workers": [
            {
                "worker_id": row["worker_id"],
                "first_seen_at": to_rfc3339(row["first_seen_at_ms"]),
                "last_seen_at": to_rfc3339(row["last_seen_at_ms"]),
                "active_leases": held.get(row["worker_id"], 0),
            }
            for row in rows
        ],
    }
