"""Time as the runtime stores it: integer epoch milliseconds, rendered as RFC 3339 UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def to_rfc3339(epoch_ms: int) -> str:
    """Render epoch milliseconds as RFC 3339 with a ``+00:00`` offset, as upstream does."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def optional_rfc3339(epoch_ms: int | None) -> str | None:
    """``to_rfc3339`` for a nullable value."""
    return None if epoch_ms is None else to_rfc3339(epoch_ms)
