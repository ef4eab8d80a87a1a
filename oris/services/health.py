"""Readiness and the database-backed gauges for ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import Unavailable
from oris.observability.metrics import DatabaseGauges
from oris.services import incidents
from oris.services.runtime import Runtime
from oris.store import dead_letters as dlq_store
from oris.store import dispatch as dispatch_store
from oris.store import health as health_store
from oris.store import incidents as incident_store
from oris.store import schema
from oris.store import workers as worker_store

WORKERS_SEEN_WINDOW_MS = 60_000


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


async def database_gauges(rt: Runtime) -> DatabaseGauges:
    """Every state gauge. The two counts that grow with the attempts table (queue depth and
    attempts by status, each an index scan of every queued row) run concurrently on their own
    connections, so a scrape at a million queued attempts costs one of them, not both."""
    now = now_ms()

    async def depth() -> int:
        async with rt.db.read() as conn:
            return await dispatch_store.queue_depth(conn, now)

    async def by_status() -> dict[str, int]:
        async with rt.db.read() as conn:
            return await dispatch_store.attempts_by_status(conn)

    async with asyncio.TaskGroup() as group:
        queued = group.create_task(depth())
        statuses = group.create_task(by_status())
        async with rt.db.read() as conn:
            dlq = await dlq_store.count_by_replay_status(conn)
            pending = await health_store.interrupts_pending(conn)
            by_worker = await health_store.active_leases_by(conn, "worker_id", now)
            by_tenant = await health_store.active_leases_by(conn, "tenant_id", now)
            stale = await health_store.stale_leases(conn, now)
            dead_tuples, oldest = await health_store.postgres_table_health(conn)
            open_incidents = 0 if await incident_store.current(conn) is None else 1
            workers_seen = await worker_store.count_since(conn, now - WORKERS_SEEN_WINDOW_MS)
    return DatabaseGauges(
        queue_depth=queued.result(),
        dlq_depth=dlq,
        attempts_by_status=statuses.result(),
        interrupts_pending=pending,
        active_leases_by_worker=by_worker,
        active_leases_by_tenant=by_tenant,
        stale_leases=stale,
        open_incidents=open_incidents,
        workers_seen=workers_seen,
        table_dead_tuples=dead_tuples,
        oldest_transaction_age_seconds=oldest,
    )


async def recent_workers(rt: Runtime, window_seconds: float) -> dict[str, Any]:
    """Workers that polled within the window, with the leases they hold now."""
    now = now_ms()
    async with rt.db.read() as conn:
        rows = await worker_store.seen_since(conn, now - int(window_seconds * 1000), 500)
        held = await health_store.active_leases_by(conn, "worker_id", now)
    return {
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
