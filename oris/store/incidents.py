"""Queries on operator incidents (the freeze switch)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import insert_ignore
from oris.store.tables import incidents


async def current(conn: AsyncConnection) -> dict[str, Any] | None:
    """The open incident, if any."""
    row = (
        (await conn.execute(select(incidents).where(incidents.c.status == "open")))
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


async def open_incident(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Open one; False when another is already open (the unique index decides)."""
    return await insert_ignore(conn, incidents, {**values, "status": "open"})


async def close_current(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any] | None:
    """Close the open incident; None when there was none."""
    found = await current(conn)
    if found is None:
        return None
    result = await conn.execute(
        update(incidents)
        .where(incidents.c.incident_id == found["incident_id"], incidents.c.status == "open")
        .values(status="closed", **values)
    )
    if not result.rowcount:
        return None
    return {**found, "status": "closed", **values}


async def recent(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """Newest first."""
    statement = select(incidents).order_by(incidents.c.opened_at_ms.desc()).limit(limit)
    return [dict(row) for row in (await conn.execute(statement)).mappings()]
