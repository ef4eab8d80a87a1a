"""Per-credential token buckets (optional; off unless a rate is configured)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``rate`` requests per second per key with bursts of ``burst``; per process."""

    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate = rate_per_second
        self.burst = max(burst, 1)
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether limiting is configured."""
        return self.rate > 0

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until a token is available."""
        if not self.enabled:
            return 0.0
        moment = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(float(self.burst), moment)
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (moment - bucket.updated) * self.rate
        )
        bucket.updated = moment
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class FailureLimiter:
    """Counts failed credential checks per key (a client address, a key id) in token buckets
    of ``max_failures`` refilled over ``window_seconds``; per process.

    A key whose bucket is empty is refused before its next check is even attempted, so a
    guesser cannot make the server pay for more hashes than the budget allows."""

    def __init__(
        self, max_failures: int, window_seconds: float, max_tracked: int = 100_000
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether failed checks are limited at all."""
        return self.max_failures > 0

    @property
    def _rate(self) -> float:
        return self.max_failures / self.window_seconds

    def _refill(self, key: str, moment: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        bucket.tokens = min(
            float(self.max_failures), bucket.tokens + (moment - bucket.updated) * self._rate
        )
        bucket.updated = moment
        if bucket.tokens >= self.max_failures:
            # Back to a full budget: nothing worth remembering.
            del self._buckets[key]
            return None
        return bucket

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """0 when every key may be checked now, else seconds until all of them may."""
        if not self.enabled:
            return 0.0
        moment = time.monotonic() if now is None else now
        wait = 0.0
        for key in keys:
            bucket = self._refill(key, moment)
            if bucket is not None and bucket.tokens < 1.0:
                wait = max(wait, (1.0 - bucket.tokens) / self._rate)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        """Charge one failed check to every key."""
        if not self.enabled:
            return
        moment = time.monotonic() if now is None else now
        for key in keys:
            bucket = self._refill(key, moment)
            if bucket is None:
                if len(self._buckets) >= self.max_tracked:
                    self._forget_recovered(moment)
                bucket = self._buckets[key] = _Bucket(float(self.max_failures), moment)
            bucket.tokens = max(bucket.tokens - 1.0, 0.0)

    def _forget_recovered(self, moment: float) -> None:
        for key in list(self._buckets):
            self._refill(key, moment)
        if len(self._buckets) >= self.max_tracked:
            # Still full of live guessers: drop the oldest half rather than grow without bound.
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]
