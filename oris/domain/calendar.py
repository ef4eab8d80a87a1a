"""Time rules: delayed starts, and the ticks of a schedule (cron or a fixed interval).

Cron arithmetic is delegated to ``cronsim`` (see docs/schedules.md for why): it walks wall-clock
time in the schedule's IANA zone and resolves daylight-saving gaps and repeats the way Debian's
cron does, so a 02:30 job runs once on both transition days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from oris.domain.errors import InvalidArgument

MAX_DELAY_MS = 31_536_000_000  # 365 days
MAX_EVERY_SECONDS = 31_536_000
CRON_MAX_LENGTH = 256
TIMEZONE_MAX_LENGTH = 64
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)


def parse_rfc3339(field: str, value: str) -> int:
    """An RFC 3339 timestamp with an explicit offset, as epoch milliseconds (400 otherwise)."""
    text = value.strip()
    if "T" not in text.upper() or not _OFFSET.search(text):
        raise InvalidArgument(f"{field} must be an RFC 3339 timestamp with an offset")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{field} must be an RFC 3339 timestamp with an offset") from None
    if moment.tzinfo is None:
        raise InvalidArgument(f"{field} must be an RFC 3339 timestamp with an offset")
    return int(moment.timestamp() * 1000)


def start_time(run_at: str | None, delay_ms: int | None, now_ms: int) -> int | None:
    """When a run may start (epoch ms), or None to start now. ``run_at`` and ``delay_ms``
    exclude each other; both are bounded to 365 days ahead."""
    if run_at is not None and delay_ms is not None:
        raise InvalidArgument("give run_at or delay_ms, not both")
    if delay_ms is not None:
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise InvalidArgument(f"delay_ms must be between 0 and {MAX_DELAY_MS}")
        return now_ms + delay_ms if delay_ms else None
    if run_at is not None:
        at = parse_rfc3339("run_at", run_at)
        if at - now_ms > MAX_DELAY_MS:
            raise InvalidArgument("run_at must be at most 365 days ahead")
        return at if at > now_ms else None
    return None


class Overlap(StrEnum):
    """What a tick does while the schedule's previous run is unfinished."""

    SKIP = "skip"
    ALLOW = "allow"


class CatchUp(StrEnum):
    """What happens to ticks that passed while no replica was running."""

    LATEST = "latest"
    NONE = "none"


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name`` (default UTC); 400 when unknown."""
    key = "UTC" if name is None else name.strip()
    if not key or len(key) > TIMEZONE_MAX_LENGTH or key.startswith(("/", ".")) or ".." in key:
        raise InvalidArgument("timezone must be an IANA time zone name, e.g. Europe/Berlin")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown timezone {key!r}") from None


@dataclass(frozen=True, slots=True)
class Calendar:
    """When a schedule ticks: a five-field cron expression in a zone, or a fixed interval."""

    cron: str | None
    every_seconds: int | None
    timezone: str

    @classmethod
    def parse(cls, cron: str | None, every_seconds: int | None, timezone: str | None) -> Calendar:
        """Validate a schedule's timing fields (400 on anything wrong)."""
        tz = zone(timezone)
        if (cron is None) == (every_seconds is None):
            raise InvalidArgument("give exactly one of cron and every_seconds")
        if every_seconds is not None:
            if not 1 <= every_seconds <= MAX_EVERY_SECONDS:
                raise InvalidArgument(f"every_seconds must be between 1 and {MAX_EVERY_SECONDS}")
            return cls(None, every_seconds, tz.key)
        assert cron is not None
        expression = " ".join(cron.split())
        if not expression or len(expression) > CRON_MAX_LENGTH:
            raise InvalidArgument("cron must be a five-field cron expression")
        expanded = CRON_MACROS.get(expression.lower(), expression)
        if expanded.startswith("@"):
            raise InvalidArgument(
                "cron macro must be one of: " + "|".join(sorted(CRON_MACROS)),
            )
        if len(expanded.split(" ")) != 5:
            raise InvalidArgument("cron must have five fields: minute hour day month weekday")
        try:
            CronSim(expanded, datetime.now(tz))
        except CronSimError as error:
            raise InvalidArgument(f"invalid cron expression: {error}") from None
        return cls(expression, None, tz.key)

    def next_after(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms`` (epoch ms)."""
        if self.every_seconds is not None:
            step = self.every_seconds * 1000
            # Interval ticks sit on multiples of the interval since the epoch, so every
            # replica computes the same instants whenever it starts.
            return (after_ms // step + 1) * step
        assert self.cron is not None
        tz = ZoneInfo(self.timezone)
        expanded = CRON_MACROS.get(self.cron.lower(), self.cron)
        # cronsim works in whole minutes and returns ticks >= its start; start just after.
        start = datetime.fromtimestamp(after_ms / 1000, tz=UTC).astimezone(tz)
        tick = next(CronSim(expanded, start))
        while int(tick.timestamp() * 1000) <= after_ms:
            tick = next(CronSim(expanded, tick))
        return int(tick.timestamp() * 1000)

    def ticks_between(self, first_ms: int, until_ms: int, limit: int) -> tuple[list[int], int]:
        """Ticks from ``first_ms`` (itself a tick) to ``until_ms`` inclusive: the latest
        ``limit`` of them, oldest first, and how many there are in all."""
        if first_ms > until_ms:
            return [], 0
        if self.every_seconds is not None:
            step = self.every_seconds * 1000
            total = (until_ms - first_ms) // step + 1
            last = first_ms + (total - 1) * step
            start = max(first_ms, last - (limit - 1) * step)
            return list(range(start, last + 1, step)), total
        found = [first_ms]
        total = 1
        while True:
            following = self.next_after(found[-1])
            if following > until_ms:
                return found[-limit:], total
            found.append(following)
            total += 1
            if len(found) > 10 * limit:
                del found[: len(found) - limit]
