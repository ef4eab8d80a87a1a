"""The append-only audit log with a hash chain; rows are never updated or deleted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.dialect import is_postgres
from oris.store.records import dump_json, load_json
from oris.store.tables import audit_logs

# Any constant works; it only has to be the same for every writer of the chain.
_AUDIT_CHAIN_LOCK = 0x0A0D17


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row as written and read."""

    actor_type: str
    actor_id: str | None
    actor_role: str | None
    action: str
    resource_type: str
    resource_id: str | None
    result: str
    status_code: int | None
    request_id: str
    source_addr: str | None
    details: Any
    created_at_ms: int
    audit_id: int = 0
    prev_hash: str | None = None
    row_hash: str | None = None


def chain_hash(entry: AuditEntry, prev_hash: str | None) -> str:
    """SHA-256 over the previous row's hash and this row's content."""
    content = dump_json(
        [
            prev_hash,
            entry.actor_type,
            entry.actor_id,
            entry.actor_role,
            entry.action,
            entry.resource_type,
            entry.resource_id,
            entry.result,
            entry.status_code,
            entry.request_id,
            entry.source_addr,
            entry.details,
            entry.created_at_ms,
        ]
    )
    return hashlib.sha256(content.encode()).hexdigest()


_CHAIN_LOCK_STATEMENT = text("SELECT pg_advisory_xact_lock(:key)")
_LAST_HASH = select(audit_logs.c.row_hash).order_by(audit_logs.c.audit_id.desc()).limit(1)
_COLUMNS = (
    "actor_type",
    "actor_id",
    "actor_role",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "status_code",
    "request_id",
    "source_addr",
    "details_json",
    "created_at_ms",
    "prev_hash",
    "row_hash",
)
# Built once: composing the insert per call cost more than running it.
_INSERT = (
    audit_logs.insert()
    .values({name: bindparam(f"v_{name}") for name in _COLUMNS})
    .returning(audit_logs.c.audit_id)
)


async def append(conn: AsyncConnection, entry: AuditEntry) -> int:
    """Append a row linked to the previous one; returns its id."""
    if is_postgres(conn):
        # Concurrent writers must not both link to the same predecessor.
        await conn.execute(_CHAIN_LOCK_STATEMENT, {"key": _AUDIT_CHAIN_LOCK})
    prev_hash = (await conn.execute(_LAST_HASH)).scalar()
    values = {
        "v_actor_type": entry.actor_type,
        "v_actor_id": entry.actor_id,
        "v_actor_role": entry.actor_role,
        "v_action": entry.action,
        "v_resource_type": entry.resource_type,
        "v_resource_id": entry.resource_id,
        "v_result": entry.result,
        "v_status_code": entry.status_code,
        "v_request_id": entry.request_id,
        "v_source_addr": entry.source_addr,
        "v_details_json": None if entry.details is None else dump_json(entry.details),
        "v_created_at_ms": entry.created_at_ms,
        "v_prev_hash": prev_hash,
        "v_row_hash": chain_hash(entry, prev_hash),
    }
    result = await conn.execute(_INSERT, values)
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Filters of the audit log listing."""

    request_id: str | None = None
    action: str | None = None
    actor_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    result: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    before_id: int | None = None


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        audit_id=row["audit_id"],
        actor_type=row["actor_type"],
        actor_id=row["actor_id"],
        actor_role=row["actor_role"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        result=row["result"],
        status_code=row["status_code"],
        request_id=row["request_id"],
        source_addr=row["source_addr"],
        details=_details(row["details_json"]),
        created_at_ms=row["created_at_ms"],
        prev_hash=row["prev_hash"],
        row_hash=row["row_hash"],
    )


def _details(raw: str | None) -> Any:
    try:
        return load_json(raw)
    except ValueError:
        return raw


async def list_entries(conn: AsyncConnection, filters: AuditFilter, limit: int) -> list[AuditEntry]:
    """Newest first."""
    c = audit_logs.c
    statement = select(audit_logs).order_by(c.audit_id.desc()).limit(limit)
    conditions = {
        c.request_id: filters.request_id,
        c.action: filters.action,
        c.actor_id: filters.actor_id,
        c.resource_type: filters.resource_type,
        c.resource_id: filters.resource_id,
        c.result: filters.result,
    }
    for column, value in conditions.items():
        if value is not None:
            statement = statement.where(column == value)
    if filters.from_ms is not None:
        statement = statement.where(c.created_at_ms >= filters.from_ms)
    if filters.to_ms is not None:
        statement = statement.where(c.created_at_ms <= filters.to_ms)
    if filters.before_id is not None:
        statement = statement.where(c.audit_id < filters.before_id)
    return [_entry(row) for row in (await conn.execute(statement)).mappings()]


async def scan_chain(conn: AsyncConnection, after_id: int, batch: int) -> list[AuditEntry]:
    """Rows in chain order, for verification."""
    statement = (
        select(audit_logs)
        .where(audit_logs.c.audit_id > after_id)
        .order_by(audit_logs.c.audit_id)
        .limit(batch)
    )
    return [_entry(row) for row in (await conn.execute(statement)).mappings()]
