"""Audit: rows written inside the transaction of the change they record, and reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.audit_chain import CHAINED_FIELDS, check_segment
from oris.domain.clock import now_ms, to_rfc3339
from oris.domain.errors import Conflict, InvalidArgument, OrisError, Unavailable
from oris.services.context import RequestContext
from oris.services.transactions import retried
from oris.store import audit as audit_store
from oris.store.audit import Anchor, AuditEntry, AuditFilter
from oris.store.database import Database

log = logging.getLogger("oris.audit")

__all__ = [
    "Anchor",
    "AuditEntry",
    "AuditFilter",
    "ChainReport",
    "DenialAggregator",
    "archive",
    "archive_preview",
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


@dataclass(slots=True)
class _Window:
    """Identical denials seen since the row that opened the window."""

    opened: float
    first_request_id: str
    ctx: RequestContext
    action: str
    resource_type: str
    resource_id: str | None
    status_code: int
    details: dict[str, Any] | None
    repeats: int = 0


class DenialAggregator:
    """Audits denials without letting a retry loop flood the log.

    The first denial of a kind (same actor, address, action, resource, status, method, path
    and message) writes its row at once and opens a window of ``window_seconds``. Identical
    denials inside the window are only counted; when the window closes (or the process stops)
    one summary row is appended with ``details.count`` = how many denials it stands for and
    ``details.first_request_id`` = the request id of the row that opened the window. Rows are
    only ever appended, so the hash chain verifies as before. ``window_seconds=0`` writes a row
    per denial."""

    def __init__(self, db: Database, window_seconds: float, max_windows: int = 10_000) -> None:
        self._db = db
        self.window_seconds = window_seconds
        self._max_windows = max_windows
        self._windows: dict[bytes, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    async def record(
        self,
        ctx: RequestContext,
        *,
        action: str,
        resource_type: str,
        resource_id: str | None,
        status_code: int,
        details: dict[str, Any] | None,
    ) -> None:
        """Audit one denial (a row, or a count on the open window of its kind)."""
        now = time.monotonic()
        await self.flush(now=now)
        if self.window_seconds <= 0:
            await record(
                self._db, ctx, action=action, resource_type=resource_type,
                resource_id=resource_id, result="denied", status_code=status_code,
                details=details,
            )  # fmt: skip
            return
        kind = orjson.dumps(
            [
                ctx.actor.actor_type, ctx.actor.actor_id,
                None if ctx.actor.role is None else ctx.actor.role.value, ctx.source_addr,
                action, resource_type, resource_id, status_code, details,
            ],
            option=orjson.OPT_SORT_KEYS,
        )  # fmt: skip
        window = self._windows.get(kind)
        if window is not None:
            window.repeats += 1
            window.ctx = ctx
            return
        track = len(self._windows) < self._max_windows
        if track:
            self._windows[kind] = _Window(
                now, ctx.request_id, ctx, action, resource_type, resource_id, status_code, details
            )
        try:
            await record(
                self._db, ctx, action=action, resource_type=resource_type,
                resource_id=resource_id, result="denied", status_code=status_code,
                details=details,
            )  # fmt: skip
        except BaseException:
            if track:
                self._windows.pop(kind, None)
            raise

    async def flush(self, *, now: float | None = None, everything: bool = False) -> None:
        """Write the summary rows of closed windows (of every window with ``everything``)."""
        moment = time.monotonic() if now is None else now
        closed = [
            kind
            for kind, window in self._windows.items()
            if everything or moment - window.opened >= self.window_seconds
        ]
        for kind in closed:
            window = self._windows.pop(kind, None)
            if window is None or window.repeats == 0:
                continue
            try:
                await record(
                    self._db,
                    window.ctx,
                    action=window.action,
                    resource_type=window.resource_type,
                    resource_id=window.resource_id,
                    result="denied",
                    status_code=window.status_code,
                    details={
                        **(window.details or {}),
                        "count": window.repeats,
                        "first_request_id": window.first_request_id,
                        "window_seconds": self.window_seconds,
                    },
                )
            except Exception:
                log.exception(
                    "could not write the summary audit row of repeated denials",
                    extra={"request_id": window.ctx.request_id, "count": window.repeats},
                )

    def start(self) -> None:
        """Close windows in the background, so a summary does not wait for the next denial."""
        if self._task is None and self.window_seconds > 0:
            self._task = asyncio.create_task(self._run(), name="oris-denial-audit")

    async def stop(self) -> None:
        """Stop the background task and write every pending summary."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush(everything=True)

    async def _run(self) -> None:
        interval = min(self.window_seconds, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("flushing denial summaries failed")


async def list_logs(db: Database, filters: AuditFilter, limit: int) -> list[AuditEntry]:
    """Audit rows, newest first."""
    async with db.read() as conn:
        return await audit_store.list_entries(conn, filters, limit)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of verifying the hash chain (from the archive anchor on, if any)."""

    rows_checked: int
    first_bad_audit_id: int | None
    problem: str | None
    anchor: Anchor = field(default_factory=Anchor)

    @property
    def ok(self) -> bool:
        """Whether every row links to its predecessor and matches its hash."""
        return self.first_bad_audit_id is None


async def verify_chain(db: Database, batch: int = 1000) -> ChainReport:
    """Walk the log from the archive anchor (or the first row) and name the first row whose
    link or content does not check out."""
    report = await _verify_once(db, batch)
    for _ in range(3):
        if report.ok or report.rows_checked != 1:
            return report
        # The first row not linking to the anchor can mean an archive moved the anchor
        # between our two reads: look again before calling the chain broken.
        async with db.read() as conn:
            if await audit_store.anchor(conn) == report.anchor:
                return report
        report = await _verify_once(db, batch)
    return report


async def _verify_once(db: Database, batch: int) -> ChainReport:
    checked = 0
    async with db.read() as conn:
        anchor = await audit_store.anchor(conn)
        after_id = anchor.last_audit_id
        prev_hash = anchor.last_row_hash
        while rows := await audit_store.scan_chain(conn, after_id, batch):
            for row in rows:
                checked += 1
                if row.prev_hash != prev_hash:
                    return ChainReport(
                        checked, row.audit_id, "link to previous row is broken", anchor
                    )
                if row.row_hash != audit_store.chain_hash(row, prev_hash):
                    return ChainReport(
                        checked, row.audit_id, "row content does not match its hash", anchor
                    )
                prev_hash = row.row_hash
                after_id = row.audit_id
    return ChainReport(checked, None, None, anchor)


ARCHIVE_MAX_ROWS = 5000


def archive_row(entry: AuditEntry) -> dict[str, Any]:
    """An audit row as an archive line: every hashed field as stored, and both hashes."""
    row: dict[str, Any] = {"audit_id": entry.audit_id}
    row.update({name: getattr(entry, name) for name in CHAINED_FIELDS})
    row["prev_hash"] = entry.prev_hash
    row["row_hash"] = entry.row_hash
    return row


def anchor_view(anchor: Anchor) -> dict[str, Any]:
    """The anchor as the API shows it."""
    return {
        "last_audit_id": anchor.last_audit_id,
        "last_row_hash": anchor.last_row_hash,
        "archived_rows": anchor.archived_rows,
        "archived_at": None if anchor.archived_at_ms is None else to_rfc3339(anchor.archived_at_ms),
    }


def _archivable(rows: list[AuditEntry], before_ms: int, head_id: int) -> list[AuditEntry]:
    """The leading rows created before ``before_ms``; the chain's head always stays, so
    the next row appended still has a predecessor to link to."""
    taken = []
    for row in rows:
        if row.created_at_ms >= before_ms or row.audit_id >= head_id:
            break
        taken.append(row)
    return taken


async def archive_preview(db: Database, *, before_ms: int, limit: int) -> dict[str, Any]:
    """The oldest rows an archive would remove next (chain order), without changing anything."""
    if not 1 <= limit <= ARCHIVE_MAX_ROWS:
        raise InvalidArgument(f"limit must be between 1 and {ARCHIVE_MAX_ROWS}")
    async with db.read() as conn:
        anchor = await audit_store.anchor(conn)
        head = await audit_store.newest_id(conn)
        rows = await audit_store.scan_chain(conn, anchor.last_audit_id, limit + 1)
    taken = _archivable(rows, before_ms, head)
    more = len(taken) > limit
    taken = taken[:limit]
    return {
        "dry_run": True,
        "before": to_rfc3339(before_ms),
        "anchor": anchor_view(anchor),
        "count": len(taken),
        "rows": [archive_row(row) for row in taken],
        "more": more,
    }


@retried
async def archive(
    db: Database,
    ctx: RequestContext,
    *,
    before_ms: int,
    through_audit_id: int,
    through_row_hash: str,
) -> dict[str, Any]:
    """Remove the chain's oldest rows up to ``through_audit_id`` (which the caller has
    archived, and names by its hash) and move the anchor there, in one transaction that
    first checks the rows still form an intact chain from the anchor, all created before
    ``before_ms``. Audited, in the same transaction, as ``audit.archive``."""
    async with db.write() as conn:
        anchor = await audit_store.anchor(conn, lock=True)
        if through_audit_id <= anchor.last_audit_id:
            raise Conflict(
                f"the audit log is already archived through audit_id {anchor.last_audit_id}",
                {"anchor": anchor_view(anchor)},
            )
        head = await audit_store.newest_id(conn)
        if through_audit_id >= head:
            raise Conflict("the newest audit row is never archived", {"head_audit_id": head})
        rows = [
            row
            for row in await audit_store.scan_chain(
                conn, anchor.last_audit_id, ARCHIVE_MAX_ROWS + 1
            )
            if row.audit_id <= through_audit_id
        ]
        if len(rows) > ARCHIVE_MAX_ROWS:
            raise InvalidArgument(f"archive at most {ARCHIVE_MAX_ROWS} rows per request")
        check = check_segment([archive_row(row) for row in rows], anchor.last_row_hash)
        if not check.ok:
            raise Conflict(
                f"the audit chain is broken at audit_id {check.first_bad_audit_id} "
                f"({check.problem}); nothing was archived",
                {"first_bad_audit_id": check.first_bad_audit_id},
            )
        if not rows or rows[-1].audit_id != through_audit_id:
            raise Conflict(f"audit_id {through_audit_id} does not exist")
        if rows[-1].row_hash != through_row_hash:
            raise Conflict(
                f"audit_id {through_audit_id} does not have the given row hash; "
                "nothing was archived"
            )
        late = next((row for row in rows if row.created_at_ms >= before_ms), None)
        if late is not None:
            raise InvalidArgument(
                f"audit_id {late.audit_id} was written after the archive's cut-off",
                {"audit_id": late.audit_id},
            )
        removed = await audit_store.delete_through(conn, anchor.last_audit_id, through_audit_id)
        now = now_ms()
        await audit_store.move_anchor(
            conn,
            through_id=through_audit_id,
            through_hash=through_row_hash,
            rows=removed,
            now_ms=now,
        )
        moved = await audit_store.anchor(conn)
        # Last: the append takes the chain lock until the commit.
        await write(
            conn,
            ctx,
            action="audit.archive",
            resource_type="audit_log",
            resource_id=str(through_audit_id),
            details={
                "rows": removed,
                "after_audit_id": anchor.last_audit_id,
                "through_audit_id": through_audit_id,
                "through_row_hash": through_row_hash,
                "before": to_rfc3339(before_ms),
            },
        )
    return {"dry_run": False, "archived": removed, "anchor": anchor_view(moved)}
