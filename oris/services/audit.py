"""Audit: rows written inside the transaction of the change they record, and reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.clock import now_ms
from oris.domain.errors import OrisError, Unavailable
from oris.services.context import RequestContext
from oris.store import audit as audit_store
from oris.store.audit import AuditEntry, AuditFilter
from oris.store.database import Database

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "ChainReport",
    "list_logs",
    "record",
    "success",
    "verify_chain",
    "write",
]


def _entry(
    ctx: RequestContext,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    result: str,
    status_code: int | None,
    details: dict[str, Any] | None,
) -> AuditEntry:
    return AuditEntry(
        actor_type=ctx.actor.actor_type,
        actor_id=ctx.actor.actor_id,
        actor_role=None if ctx.actor.role is None else ctx.actor.role.value,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        status_code=status_code,
        request_id=ctx.request_id,
        source_addr=ctx.source_addr,
        details=details,
        created_at_ms=now_ms(),
    )


def success(
    ctx: RequestContext,
    action: str,
    resource: tuple[str, str | None],
    details: dict[str, Any] | None,
    status_code: int = 200,
) -> AuditEntry:
    """The row recording a successful action: ``resource`` is (type, id)."""
    kind, key = resource
    return _entry(
        ctx, action=action, resource_type=kind, resource_id=key, result="success",
        status_code=status_code, details=details,
    )  # fmt: skip


async def write(
    conn: AsyncConnection,
    ctx: RequestContext,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
    status_code: int = 200,
) -> None:
    """Record a successful action in the caller's transaction: no audit row, no change."""
    entry = success(ctx, action, (resource_type, resource_id), details, status_code)
    try:
        await audit_store.append(conn, entry)
    except OrisError:
        raise
    except Exception as error:
        raise Unavailable(
            "the audit log could not be written; the change was not applied"
        ) from error


async def record(
    db: Database,
    ctx: RequestContext,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    result: str,
    status_code: int,
    details: dict[str, Any] | None = None,
) -> None:
    """Record a refused or failed action in a transaction of its own."""
    entry = _entry(
        ctx,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        status_code=status_code,
        details=details,
    )
    async with db.write() as conn:
        await audit_store.append(conn, entry)


async def list_logs(db: Database, filters: AuditFilter, limit: int) -> list[AuditEntry]:
    """Audit rows, newest first."""
    async with db.read() as conn:
        return await audit_store.list_entries(conn, filters, limit)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of verifying the hash chain."""

    rows_checked: int
    first_bad_audit_id: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether every row links to its predecessor and matches its hash."""
        return self.first_bad_audit_id is None


async def verify_chain(db: Database, batch: int = 1000) -> ChainReport:
    """Walk the whole log and name the first row whose link or content does not check out."""
    checked = 0
    after_id = 0
    prev_hash: str | None = None
    async with db.read() as conn:
        while rows := await audit_store.scan_chain(conn, after_id, batch):
            for row in rows:
                checked += 1
                if row.prev_hash != prev_hash:
                    return ChainReport(checked, row.audit_id, "link to previous row is broken")
                if row.row_hash != audit_store.chain_hash(row, prev_hash):
                    return ChainReport(checked, row.audit_id, "row content does not match its hash")
                prev_hash = row.row_hash
                after_id = row.audit_id
    return ChainReport(checked, None, None)
