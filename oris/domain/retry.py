"""Retry policies: validation with upstream's messages and the backoff arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from oris.domain.errors import InvalidArgument
from oris.domain.validation import MAX_DURATION_MS, MAX_RETRIES, check_range

DEFAULT_MULTIPLIER = 2.0
# No retry waits longer than a year, whatever the policy or a worker's ``retry_delay_ms`` says.
MAX_DELAY_MS = 365 * 24 * 3600 * 1000


class RetryStrategy(StrEnum):
    """How the delay grows between retries."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A validated retry policy; ``max_retries`` retries means ``max_retries + 1`` executions."""

    strategy: RetryStrategy
    backoff_ms: int
    max_retries: int
    max_backoff_ms: int | None = None
    multiplier: float | None = None

    @classmethod
    def parse(
        cls,
        *,
        strategy: str,
        backoff_ms: int,
        max_retries: int,
        max_backoff_ms: int | None = None,
        multiplier: float | None = None,
    ) -> RetryPolicy:
        """Validate the raw fields in upstream's order and build a policy (400 on bad input)."""
        if backoff_ms <= 0:
            raise InvalidArgument("retry_policy.backoff_ms must be > 0")
        check_range("retry_policy.backoff_ms", backoff_ms, 1, MAX_DURATION_MS)
        normalized = strategy.strip().lower()
        if normalized not in {s.value for s in RetryStrategy}:
            raise InvalidArgument("retry_policy.strategy must be one of: fixed|exponential")
        if max_backoff_ms is not None:
            if max_backoff_ms <= 0:
                raise InvalidArgument("retry_policy.max_backoff_ms must be > 0")
            check_range("retry_policy.max_backoff_ms", max_backoff_ms, 1, MAX_DURATION_MS)
            if max_backoff_ms < backoff_ms:
                raise InvalidArgument(
                    "retry_policy.max_backoff_ms must be >= retry_policy.backoff_ms"
                )
        if max_retries < 0:
            raise InvalidArgument("retry_policy.max_retries must be >= 0")
        check_range("retry_policy.max_retries", max_retries, 0, MAX_RETRIES)
        resolved_multiplier: float | None = None
        if normalized == RetryStrategy.EXPONENTIAL:
            resolved_multiplier = DEFAULT_MULTIPLIER if multiplier is None else float(multiplier)
            if not resolved_multiplier > 1.0:
                raise InvalidArgument(
                    "retry_policy.multiplier must be > 1.0 for exponential backoff"
                )
        return cls(
            strategy=RetryStrategy(normalized),
            backoff_ms=backoff_ms,
            max_retries=max_retries,
            max_backoff_ms=max_backoff_ms,
            multiplier=resolved_multiplier,
        )

    def allows_retry_after(self, attempt_no: int) -> bool:
        """Whether a failure of execution number ``attempt_no`` (1-based) may be retried."""
        return max(attempt_no, 1) <= self.max_retries

    def delay_ms(self, attempt_no: int) -> int:
        """Delay before the retry that follows failed execution number ``attempt_no``."""
        n = max(attempt_no, 1)
        if self.strategy is RetryStrategy.FIXED:
            raw = float(self.backoff_ms)
        else:
            multiplier = self.multiplier or DEFAULT_MULTIPLIER
            try:
                raw = self.backoff_ms * multiplier ** (n - 1)
            except OverflowError:
                raw = float("inf")
        if self.max_backoff_ms is not None:
            raw = min(raw, float(self.max_backoff_ms))
        # Without a cap, keep the delay representable: one year is a sane ceiling.
        raw = min(raw, float(MAX_DELAY_MS))
        return max(round(raw), 1)

    def to_json(self) -> dict[str, Any]:
        """The policy as stored and returned."""
        return {
            "strategy": self.strategy.value,
            "backoff_ms": self.backoff_ms,
            "max_backoff_ms": self.max_backoff_ms,
            "multiplier": self.multiplier,
            "max_retries": self.max_retries,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RetryPolicy:
        """Rebuild a stored policy. It was validated when it was stored; it is not validated
        again, so a policy stored under older, looser limits keeps working."""
        multiplier = raw.get("multiplier")
        max_backoff = raw.get("max_backoff_ms")
        return cls(
            strategy=RetryStrategy(str(raw["strategy"]).strip().lower()),
            backoff_ms=int(raw["backoff_ms"]),
            max_retries=int(raw["max_retries"]),
            max_backoff_ms=None if max_backoff is None else int(max_backoff),
            multiplier=None if multiplier is None else float(multiplier),
        )
