"""Running a transaction again when the database rolled it back to break a deadlock.

Every transaction takes its row locks in the order docs/architecture.md sets out ("Row lock
order"), so deadlocks between the runtime's own transactions should not happen; but a
deadlock or a serialization failure is always possible against something outside that order
(an operator's session, a future statement), and it rolls back the whole transaction and
nothing else. Such a transaction is simply run again, a few times, after a short random
pause; only if it keeps failing does the caller get a 503 (``unavailable``), never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from oris.domain.errors import TransientConflict

log = logging.getLogger("oris.transactions")

ATTEMPTS = 5
FIRST_PAUSE_SECONDS = 0.01
MAX_PAUSE_SECONDS = 0.25

P = ParamSpec("P")
T = TypeVar("T")


def pause_before(retry_no: int) -> float:
    """A random pause before retry ``retry_no`` (1-based): full jitter under a doubling cap,
    so transactions that collided do not collide again in step."""
    cap = min(FIRST_PAUSE_SECONDS * 2 ** (retry_no - 1), MAX_PAUSE_SECONDS)
    return random.uniform(0, cap)  # jitter, not a secret


def retried(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run ``function`` (which holds exactly one transaction) again when the database rolled
    its transaction back (:class:`TransientConflict`); bounded, with jitter.

    Effects outside the database that must not repeat belong after the commit: after-commit
    callbacks of a rolled-back attempt are dropped with it. (A counter bumped before the
    rollback may count the retried work twice; the runtime's are counted after the commit
    where that matters.)"""

    @functools.wraps(function)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        for retry_no in range(1, ATTEMPTS + 1):
            try:
                return await function(*args, **kwargs)
            except TransientConflict as error:
                if retry_no == ATTEMPTS:
                    log.error(
                        "transaction rolled back %d times; giving up",
                        ATTEMPTS,
                        extra={"operation": function.__qualname__, "reason": _reason(error)},
                    )
                    raise
                log.warning(
                    "transaction rolled back by the database; running it again",
                    extra={
                        "operation": function.__qualname__,
                        "reason": _reason(error),
                        "retry_no": retry_no,
                    },
                )
                await asyncio.sleep(pause_before(retry_no))
        raise AssertionError("unreachable")  # pragma: no cover

    return run


def _reason(error: TransientConflict) -> str:
    return str((error.details or {}).get("reason", "conflict"))
