"""Exponential backoff with jitter, for idle polling and for retrying transient failures."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``initial_seconds`` up to ``max_seconds``, each jittered down."""

    def __init__(
        self,
        initial_seconds: float,
        max_seconds: float,
        *,
        factor: float = 2.0,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if initial_seconds <= 0 or max_seconds <= 0:
            raise ValueError("backoff delays must be > 0")
        self.initial_seconds = min(initial_seconds, max_seconds)
        self.max_seconds = max_seconds
        self.factor = factor
        self._jitter = jitter
        self._ceiling = self.initial_seconds

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return self._ceiling

    def next_delay(self) -> float:
        """The next delay: in [ceiling/2, ceiling], then the ceiling grows towards the maximum."""
        ceiling = self._ceiling
        self._ceiling = min(ceiling * self.factor, self.max_seconds)
        # Jitter spreads many idle workers out so they do not poll in lockstep.
        return self._jitter(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._ceiling = self.initial_seconds
