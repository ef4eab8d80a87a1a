"""State transitions: a timeline row in the transaction, a structured log line after commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store import jobs as job_store
from oris.store.database import after_commit

log = logging.getLogger("oris.transitions")


async def record(
    conn: AsyncConnection,
    *,
    thread_id: str,
    event_type: str,
    now_ms: int,
    attempt_id: str | None = None,
    checkpoint_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append a timeline event and log it once (and only if) the transaction commits."""
    await record_many(
        conn,
        [
            {
                "thread_id": thread_id,
                "event_type": event_type,
                "now_ms": now_ms,
                "attempt_id": attempt_id,
                "checkpoint_id": checkpoint_id,
                "details": details,
            }
        ],
    )


async def record_many(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`record` for many transitions (dicts of its keyword arguments), one statement."""
    if not rows:
        return
    await job_store.add_events(conn, rows)
    note(conn, rows)


def note(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Log transitions whose timeline rows were written by a batch statement, after commit."""

    def emit() -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        for row in rows:
            fields = {
                "event": row["event_type"],
                "thread_id": row["thread_id"],
                "attempt_id": row.get("attempt_id"),
                "worker_id": (row.get("details") or {}).get("worker_id"),
            }
            if row.get("checkpoint_id") is not None:
                fields["checkpoint_id"] = row["checkpoint_id"]
            log.info("transition", extra=fields)

    after_commit(conn, emit)
