"""Opaque list cursors and the time bounds of list filters.

A cursor names the last row of a page by its sort key, so the next page starts right after
it whatever was inserted in the meantime (keyset paging). It also carries the listing it was
issued for (its kind, order and a fingerprint of the filters): a cursor replayed against other
filters is refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oris.domain.errors import InvalidArgument

CURSOR_VERSION = 1
MAX_CURSOR_LENGTH = 1024
MAX_TIME_MS = 2**53  # well inside BIGINT: larger bounds would reach the database as errors


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after the row with sort key ``key``."""

    kind: str
    order: str
    fingerprint: str
    key: tuple[Any, ...]


def fingerprint(filters: dict[str, Any]) -> str:
    """A short digest of a listing's filters (None values ignored)."""
    present = {name: value for name, value in filters.items() if value is not None}
    canonical = json.dumps(present, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(cursor: Cursor) -> str:
    """The opaque text a response carries as ``next_cursor``."""
    payload = {
        "v": CURSOR_VERSION,
        "k": cursor.kind,
        "o": cursor.order,
        "f": cursor.fingerprint,
        "p": list(cursor.key),
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, *, kind: str, key_types: tuple[type, ...]) -> Cursor:
    """Parse a cursor a previous page returned; 400 ``invalid_argument`` if it is not one."""
    if not text or len(text) > MAX_CURSOR_LENGTH:
        raise InvalidArgument("cursor is malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidArgument("cursor is malformed") from None
    if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
        raise InvalidArgument("cursor is malformed")
    key = payload.get("p")
    order = payload.get("o")
    digest = payload.get("f")
    if (
        payload.get("k") != kind
        or not isinstance(order, str)
        or not isinstance(digest, str)
        or not isinstance(key, list)
        or len(key) != len(key_types)
        or any(
            not isinstance(part, wanted) or isinstance(part, bool)
            for part, wanted in zip(key, key_types, strict=True)
        )
    ):
        raise InvalidArgument("cursor is malformed")
    for part in key:
        if isinstance(part, int) and not -MAX_TIME_MS <= part <= MAX_TIME_MS:
            raise InvalidArgument("cursor is malformed")
        if isinstance(part, str) and "\x00" in part:
            raise InvalidArgument("cursor is malformed")
    return Cursor(kind=kind, order=order, fingerprint=digest, key=tuple(key))


def check_cursor(cursor: Cursor, *, order: str, filters_fingerprint: str) -> None:
    """400 when a cursor is sent with another order or other filters than it was issued for."""
    if cursor.order != order:
        raise InvalidArgument(f"cursor was issued for order '{cursor.order}', not '{order}'")
    if cursor.fingerprint != filters_fingerprint:
        raise InvalidArgument("cursor was issued for different filters; start from the first page")


def parse_time_bound(field: str, value: str | int | None) -> int | None:
    """A list filter's time bound: RFC 3339 (``2026-01-31T12:00:00Z``) or epoch milliseconds."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _bounded(field, value)
    text = str(value).strip()
    if not text:
        return None
    if text.lstrip("-").isdigit() and len(text) < 20:
        return _bounded(field, int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{field} must be an RFC 3339 time (e.g. 2026-01-31T12:00:00Z) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _bounded(field, int(moment.timestamp() * 1000))


def _bounded(field: str, value: int) -> int:
    if not -MAX_TIME_MS <= value <= MAX_TIME_MS:
        raise InvalidArgument(f"{field} is out of range")
    return value
