"""The audit hash chain's arithmetic, shared by the server and an offline archive check.

Each row's hash is SHA-256 over the JSON array ``[prev_hash, actor_type, …, created_at_ms]``;
a row links to the one before it by carrying that row's hash as ``prev_hash``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# The hashed fields, in hash order (``details`` is the parsed JSON value, not its text).
CHAINED_FIELDS: tuple[str, ...] = (
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
    "details",
    "created_at_ms",
)


def hashed_tail(values: Iterable[Any]) -> bytes:
    """The hashed content after the previous hash: the fields as JSON, without the ``[``."""
    return orjson.dumps(list(values))[1:]


def chain_hash(values: Iterable[Any], prev_hash: str | None) -> str:
    """The hash of a row with these field values (in :data:`CHAINED_FIELDS` order) that
    follows a row whose hash is ``prev_hash`` (None for the first row of the chain)."""
    head = b"[null," if prev_hash is None else b'["' + prev_hash.encode() + b'",'
    return hashlib.sha256(head + hashed_tail(values)).hexdigest()


def row_hash(row: Mapping[str, Any], prev_hash: str | None) -> str:
    """:func:`chain_hash` of a row given as a mapping of its fields."""
    return chain_hash((row.get(name) for name in CHAINED_FIELDS), prev_hash)


@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """Outcome of checking consecutive audit rows."""

    rows_checked: int
    first_audit_id: int | None
    last_audit_id: int | None
    starts_after_hash: str | None
    last_row_hash: str | None
    first_bad_audit_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every row links to its predecessor and matches its hash."""
        return self.problem is None


_UNSET: Any = object()


def check_segment(rows: Iterable[Mapping[str, Any]], prev_hash: Any = _UNSET) -> SegmentCheck:
    """Check rows in chain order. Without ``prev_hash`` the first row's own ``prev_hash`` is
    taken as where the segment starts (an archive file starts wherever the chain was cut)."""
    checked = 0
    first_id: int | None = None
    last_id: int | None = None
    start: str | None = None
    previous: str | None = None
    for row in rows:
        audit_id = int(row["audit_id"])
        if checked == 0:
            first_id = audit_id
            start = row.get("prev_hash") if prev_hash is _UNSET else prev_hash
            previous = start
        checked += 1
        problem = None
        if last_id is not None and audit_id <= last_id:
            problem = "rows are not in chain order"
        elif row.get("prev_hash") != previous:
            problem = "link to previous row is broken"
        elif row.get("row_hash") != row_hash(row, previous):
            problem = "row content does not match its hash"
        if problem is not None:
            return SegmentCheck(checked, first_id, last_id, start, previous, audit_id, problem)
        previous = row.get("row_hash")
        last_id = audit_id
    return SegmentCheck(checked, first_id, last_id, start, previous)
