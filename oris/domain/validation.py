"""Validation of identifiers and scheduling options, with upstream's error messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from oris.domain.errors import InvalidArgument

ID_MAX_LENGTH = 128
_ID_CHARSET = re.compile(r"^[A-Za-z0-9\-_.:]+$")
MIN_PRIORITY = 0
MAX_PRIORITY = 100
MIN_LEASE_TTL_SECONDS = 1
MAX_LEASE_TTL_SECONDS = 3600
# Integers the runtime stores or computes with are 64-bit signed (BIGINT on PostgreSQL,
# SQLite's INTEGER); a request integer outside that range is a 400, whatever the field.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Durations in milliseconds (timeouts, backoffs, retry delays): at most 100 years of 365 days,
# so that ``now + duration`` is far from overflowing and renders as an RFC 3339 date.
MAX_DURATION_MS = 100 * 365 * 24 * 3600 * 1000
# Retries of one attempt: the attempt number they advance is a 32-bit column.
MAX_RETRIES = 1_000_000


def check_range(field: str, value: int, low: int, high: int) -> int:
    """An integer within ``low..high`` (400 naming the range otherwise)."""
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}")
    return value


def require_id(field: str, value: str | None) -> str:
    """A required identifier: non-blank, at most 128 characters of ``[A-Za-z0-9-_.:]``."""
    if value is None or not value.strip():
        raise InvalidArgument(f"{field} must not be empty")
    return check_id(field, value)


def check_id(field: str, value: str) -> str:
    """Bound an identifier's length and character set (400 otherwise)."""
    if len(value) > ID_MAX_LENGTH:
        raise InvalidArgument(f"{field} must be {ID_MAX_LENGTH} characters or fewer")
    if not _ID_CHARSET.match(value):
        raise InvalidArgument(f"{field} contains unsupported characters")
    return value


def optional_id(field: str, value: str | None) -> str | None:
    """An optional identifier: trimmed, blank means absent, otherwise validated."""
    if value is None:
        return None
    trimmed = value.strip()
    if not trimmed:
        return None
    return check_id(field, trimmed)


def check_text(field: str, value: str | None) -> str | None:
    """Free text bound for a text column or a filter: PostgreSQL text cannot hold U+0000."""
    if value is not None and "\x00" in value:
        raise InvalidArgument(f"{field} must not contain NUL (U+0000) characters")
    return value


def check_priority(value: int | None) -> int:
    """Priority 0..100, default 0."""
    if value is None:
        return 0
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidArgument("priority must be between 0 and 100")
    return value


def check_lease_ttl(value: int | None, default_seconds: float) -> float:
    """A requested lease TTL in seconds, bounded to 1..3600."""
    if value is None:
        return default_seconds
    if not MIN_LEASE_TTL_SECONDS <= value <= MAX_LEASE_TTL_SECONDS:
        raise InvalidArgument(
            f"lease_ttl_seconds must be between {MIN_LEASE_TTL_SECONDS} and {MAX_LEASE_TTL_SECONDS}"
        )
    return float(value)


def clamp_limit(value: int | None, *, default: int, maximum: int) -> int:
    """A list limit: default when absent, 400 below 1 (or beyond 64 bits), clamped to
    ``maximum``."""
    if value is None:
        return default
    if value < 1:
        raise InvalidArgument("limit must be >= 1")
    if value > INT64_MAX:
        raise InvalidArgument(f"limit must be between 1 and {INT64_MAX}")
    return min(value, maximum)


def check_offset(value: int | None) -> int:
    """A list offset: 0 when absent, 400 when negative or beyond 64 bits."""
    if value is None:
        return 0
    if value < 0:
        raise InvalidArgument("offset must be >= 0")
    return check_range("offset", value, 0, INT64_MAX)


class TimeoutStatus(StrEnum):
    """Where an attempt goes when its execution timeout elapses."""

    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    """A validated execution timeout, counted from the start of the current lease."""

    timeout_ms: int
    on_timeout_status: TimeoutStatus

    @classmethod
    def parse(cls, timeout_ms: int, on_timeout_status: str) -> TimeoutPolicy:
        """Validate with upstream's messages."""
        if timeout_ms <= 0:
            raise InvalidArgument("timeout_policy.timeout_ms must be > 0")
        check_range("timeout_policy.timeout_ms", timeout_ms, 1, MAX_DURATION_MS)
        status = on_timeout_status.strip().lower()
        if status not in {s.value for s in TimeoutStatus}:
            raise InvalidArgument(
                "timeout_policy.on_timeout_status must be one of: failed|cancelled"
            )
        return cls(timeout_ms=timeout_ms, on_timeout_status=TimeoutStatus(status))


RESERVED_WORKFLOW_PREFIX = "oris."
# The reserved workflows the runtime itself serves: ``oris smoke`` runs, polls and acks its own
# probe job. Any other ``oris.*`` name has no worker anywhere and would wait forever.
RUNTIME_WORKFLOWS = frozenset({"oris.smoke"})


def is_reserved_workflow(name: str) -> bool:
    """Whether ``name`` is in the runtime's namespace (``oris.`` in any letter case)."""
    return name.lower().startswith(RESERVED_WORKFLOW_PREFIX)


def check_workflow(value: str) -> str:
    """A job's workflow name: 400 for a reserved name the runtime does not serve."""
    if is_reserved_workflow(value) and value not in RUNTIME_WORKFLOWS:
        served = ", ".join(sorted(RUNTIME_WORKFLOWS))
        raise InvalidArgument(
            f"workflow names starting with {RESERVED_WORKFLOW_PREFIX!r} are reserved for the "
            f"runtime, which serves only: {served}",
            {"workflow": value},
        )
    return value
