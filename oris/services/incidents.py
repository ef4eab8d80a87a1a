"""Incident freeze: while an incident is open, risky operator actions need an explicit,
audited override."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.clock import now_ms, optional_rfc3339, to_rfc3339
from oris.domain.errors import Conflict, IncidentFreeze, InvalidArgument
from oris.services import audit
from oris.services.context import RequestContext
from oris.store import incidents as incident_store
from oris.store.database import Database

MAX_REASON = 2000


def view(row: dict[str, Any]) -> dict[str, Any]:
    """An incident as the API shows it."""
    return {
        "incident_id": row["incident_id"],
        "status": row["status"],
        "reason": row["reason"],
        "opened_by": row["opened_by"],
        "opened_at": to_rfc3339(row["opened_at_ms"]),
        "closed_by": row.get("closed_by"),
        "closed_at": optional_rfc3339(row.get("closed_at_ms")),
        "close_reason": row.get("close_reason"),
    }


def _actor_name(ctx: RequestContext) -> str:
    return ctx.actor.actor_id or ctx.actor.actor_type


def _reason(reason: str | None, *, required: bool) -> str | None:
    cleaned = (reason or "").strip()
    if required and not cleaned:
        raise InvalidArgument("reason must not be empty")
    if len(cleaned) > MAX_REASON:
        raise InvalidArgument(f"reason must be {MAX_REASON} characters or fewer")
    return cleaned or None


async def open_incident(db: Database, ctx: RequestContext, reason: str | None) -> dict[str, Any]:
    """Open an incident: the freeze applies at once, in every replica."""
    text = _reason(reason, required=True)
    now = now_ms()
    incident_id = (
        f"inc-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now / 1000))}-{secrets.token_hex(3)}"
    )
    async with db.write() as conn:
        values = {
            "incident_id": incident_id,
            "reason": text,
            "opened_by": _actor_name(ctx),
            "opened_at_ms": now,
        }
        if not await incident_store.open_incident(conn, values):
            existing = await incident_store.current(conn)
            raise Conflict(
                "an incident is already open",
                {"incident_id": None if existing is None else existing["incident_id"]},
            )
        await audit.write(
            conn,
            ctx,
            action="incident.open",
            resource_type="incident",
            resource_id=incident_id,
            details={"reason": text},
        )
    return view({**values, "status": "open"})


async def close_incident(db: Database, ctx: RequestContext, reason: str | None) -> dict[str, Any]:
    """Close the open incident and lift the freeze."""
    text = _reason(reason, required=False)
    async with db.write() as conn:
        closed = await incident_store.close_current(
            conn, {"closed_by": _actor_name(ctx), "closed_at_ms": now_ms(), "close_reason": text}
        )
        if closed is None:
            raise Conflict("no incident is open")
        await audit.write(
            conn,
            ctx,
            action="incident.close",
            resource_type="incident",
            resource_id=closed["incident_id"],
            details={"reason": text},
        )
    return view(closed)


async def current(db: Database) -> dict[str, Any] | None:
    """The open incident, if any."""
    async with db.read() as conn:
        found = await incident_store.current(conn)
    return None if found is None else view(found)


async def recent(db: Database, limit: int = 20) -> dict[str, Any]:
    """Recent incidents, newest first."""
    async with db.read() as conn:
        rows = await incident_store.recent(conn, limit)
    return {"incidents": [view(row) for row in rows]}


async def check_freeze(
    conn: AsyncConnection, ctx: RequestContext, action: str
) -> dict[str, Any] | None:
    """Inside a risky action's transaction: 409 ``incident_freeze`` unless overridden.

    Returns audit details describing the override when one was used.
    """
    found = await incident_store.current(conn)
    if found is None:
        return None
    override = (ctx.freeze_override_reason or "").strip()
    if not override:
        raise IncidentFreeze(
            f"{action} is frozen while incident {found['incident_id']} is open; "
            "repeat with an override reason to proceed",
            {"incident_id": found["incident_id"], "reason": found["reason"]},
        )
    return {"incident_id": found["incident_id"], "freeze_override_reason": override[:MAX_REASON]}
