"""State transitions: a timeline row in the transaction, a structured log line after commit."""

from __future__ import annotations

import logging
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
    await job_store.add_event(
        conn,
        thread_id=thread_id,
        event_type=event_type,
        now_ms=now_ms,
        attempt_id=attempt_id,
        checkpoint_id=checkpoint_id,
        details=details,
    )
    fields = {
        "event": event_type,
        "thread_id": thread_id,
        "attempt_id": attempt_id,
        "worker_id": (details or {}).get("worker_id"),
    }
    if checkpoint_id is not None:
        fields["checkpoint_id"] = checkpoint_id
    after_commit(conn, lambda: log.info("transition", extra=fields))
