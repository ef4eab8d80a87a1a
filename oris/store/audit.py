"""The append-only audit log with a hash chain. Rows are never updated; the only delete is
the archive's, which removes the oldest part of the chain and records where it ended in the
anchor row."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.audit_chain import CHAINED_FIELDS, hashed_tail
from oris.domain.audit_chain import chain_hash as domain_chain_hash
from oris.store.dialect import insert_ignore, is_postgres, pg_cast_type
from oris.store.records import dump_json, load_json
from oris.store.tables import audit_anchor, audit_logs

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


def _chained(entry: AuditEntry) -> list[Any]:
    return [getattr(entry, name) for name in CHAINED_FIELDS]


def _hashed_tail(entry: AuditEntry) -> bytes:
    """The hashed content after the previous hash: a row's fields as JSON, without the ``[``."""
    return hashed_tail(_chained(entry))


def chain_hash(entry: AuditEntry, prev_hash: str | None) -> str:
    """SHA-256 over the previous row's hash and this row's content: the JSON array
    ``[prev_hash, actor_type, …, created_at_ms]``. PostgreSQL computes the same bytes in
    :func:`append_sql` (the previous hash is hex or null, so its JSON needs no escaping)."""
    return domain_chain_hash(_chained(entry), prev_hash)


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
)
# Built once: composing the insert per call cost more than running it.
_INSERT = (
    audit_logs.insert()
    .values({name: bindparam(f"v_{name}") for name in (*_COLUMNS, "prev_hash", "row_hash")})
    .returning(audit_logs.c.audit_id)
)


def _values(entry: AuditEntry, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}actor_type": entry.actor_type,
        f"{prefix}actor_id": entry.actor_id,
        f"{prefix}actor_role": entry.actor_role,
        f"{prefix}action": entry.action,
        f"{prefix}resource_type": entry.resource_type,
        f"{prefix}resource_id": entry.resource_id,
        f"{prefix}result": entry.result,
        f"{prefix}status_code": entry.status_code,
        f"{prefix}request_id": entry.request_id,
        f"{prefix}source_addr": entry.source_addr,
        f"{prefix}details_json": None if entry.details is None else dump_json(entry.details),
        f"{prefix}created_at_ms": entry.created_at_ms,
    }


@functools.lru_cache(maxsize=8)
def append_sql(prefix: str, source: str | None = None) -> str:
    """PostgreSQL: an ``INSERT … SELECT`` that appends one linked row in a single statement,
    with parameters named ``<prefix><column>`` (:func:`append_params`). The chain head
    function (revision 0004) takes the chain lock and reads the previous hash after it is
    granted; the row's hash is computed from it in the same statement. With ``source`` (the
    name of a CTE), the row is written once per row of it: zero or one.

    The lock is held until the transaction ends, so the statement belongs at the end of it."""
    casts = ", ".join(
        f"CAST(:{prefix}{name} AS {pg_cast_type(audit_logs, name)})" for name in _COLUMNS
    )
    head = f"SELECT oris_audit_chain_head(CAST(:{prefix}lock AS bigint)) AS prev_hash"
    if source is not None:
        head += f" FROM {source}"
    digest = (
        "encode(sha256(convert_to('[' || COALESCE('\"' || head.prev_hash || '\"', 'null') "
        f"|| ',', 'UTF8') || CAST(:{prefix}tail AS bytea)), 'hex')"
    )
    return (
        f"INSERT INTO {audit_logs.name} ({', '.join((*_COLUMNS, 'prev_hash', 'row_hash'))}) "
        f"SELECT {casts}, head.prev_hash, {digest} FROM ({head}) AS head RETURNING audit_id"
    )


# Text fields a caller may fill with anything (a refused request's path parameter), and the
# lengths of their columns.
_LENGTHS = {
    name: audit_logs.c[name].type.length  # type: ignore[attr-defined]
    for name in ("actor_id", "action", "resource_type", "resource_id", "request_id", "source_addr")
}
_TEXT_FIELDS = (
    "actor_type",
    "actor_id",
    "actor_role",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "request_id",
    "source_addr",
)
# PostgreSQL text cannot hold U+0000; a refused request may still carry one (``%00`` in a path
# parameter), and its denial must be recorded. The row stores the visible six characters
# ``\u0000`` instead (``details`` is JSON, which escapes it anyway).
NUL_ESCAPE = "\\u0000"


def _fit(entry: AuditEntry) -> AuditEntry:
    """The entry with NUL escaped and each text field cut to its column's length, before it
    is hashed, so such a value is written on both backends and still verifies."""
    fitted: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, str):
            continue
        fixed = value.replace("\x00", NUL_ESCAPE) if "\x00" in value else value
        length = _LENGTHS.get(name)
        if length is not None and len(fixed) > length:
            fixed = fixed[:length]
        if fixed is not value:
            fitted[name] = fixed
    return dataclasses.replace(entry, **fitted) if fitted else entry


def append_params(entry: AuditEntry, prefix: str) -> dict[str, Any]:
    """The parameters of :func:`append_sql` for ``entry``."""
    entry = _fit(entry)
    values = _values(entry, prefix)
    values[f"{prefix}lock"] = _AUDIT_CHAIN_LOCK
    values[f"{prefix}tail"] = _hashed_tail(entry)
    return values


_APPEND_POSTGRES = text(append_sql("v_"))


async def append(conn: AsyncConnection, entry: AuditEntry) -> int:
    """Append a row linked to the previous one; returns its id. One statement on PostgreSQL,
    whose chain lock is held until the caller's transaction commits."""
    if is_postgres(conn):
        result = await conn.execute(_APPEND_POSTGRES, append_params(entry, "v_"))
        return int(result.scalar_one())
    # SQLite: one writer at a time, so the head cannot move under us.
    entry = _fit(entry)
    prev_hash = (await conn.execute(_LAST_HASH)).scalar()
    values = _values(entry, "v_")
    values["v_prev_hash"] = prev_hash
    values["v_row_hash"] = chain_hash(entry, prev_hash)
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


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where the archived part of the chain ends; (0, None) when nothing was archived."""

    last_audit_id: int = 0
    last_row_hash: str | None = None
    archived_rows: int = 0
    archived_at_ms: int | None = None


_ANCHOR_ID = 1


async def anchor(conn: AsyncConnection, *, lock: bool = False) -> Anchor:
    """The archive anchor, optionally locked (one archiver at a time) for the transaction."""
    statement = select(audit_anchor).where(audit_anchor.c.anchor_id == _ANCHOR_ID)
    if lock and is_postgres(conn):
        # Create the row first so there is something to lock the first time.
        await insert_ignore(
            conn,
            audit_anchor,
            {
                "anchor_id": _ANCHOR_ID,
                "last_audit_id": 0,
                "last_row_hash": "",
                "archived_rows": 0,
                "archived_at_ms": 0,
            },
        )
        statement = statement.with_for_update()
    row = (await conn.execute(statement)).mappings().first()
    if row is None or not row["last_audit_id"]:
        return Anchor()
    return Anchor(
        int(row["last_audit_id"]),
        str(row["last_row_hash"]),
        int(row["archived_rows"]),
        int(row["archived_at_ms"]),
    )


async def newest_id(conn: AsyncConnection) -> int:
    """The id of the chain's head (0 when the log is empty)."""
    value = (await conn.execute(select(func.max(audit_logs.c.audit_id)))).scalar()
    return int(value or 0)


async def delete_through(conn: AsyncConnection, after_id: int, through_id: int) -> int:
    """Delete the rows ``after_id < audit_id <= through_id``; returns how many."""
    result = await conn.execute(
        delete(audit_logs).where(
            audit_logs.c.audit_id > after_id, audit_logs.c.audit_id <= through_id
        )
    )
    return int(result.rowcount)


async def move_anchor(
    conn: AsyncConnection, *, through_id: int, through_hash: str, rows: int, now_ms: int
) -> None:
    """Record that the chain is archived through ``through_id`` (row created if absent)."""
    values = {
        "last_audit_id": through_id,
        "last_row_hash": through_hash,
        "archived_at_ms": now_ms,
    }
    inserted = await insert_ignore(
        conn, audit_anchor, {"anchor_id": _ANCHOR_ID, "archived_rows": rows, **values}
    )
    if not inserted:
        await conn.execute(
            update(audit_anchor)
            .where(audit_anchor.c.anchor_id == _ANCHOR_ID)
            .values(archived_rows=audit_anchor.c.archived_rows + rows, **values)
        )
