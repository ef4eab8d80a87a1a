"""Errors a workflow raises to say whether its failure may be retried, and the SDK's own."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class RetryableError(Exception):
    """The attempt failed but may succeed later; ``delay_ms`` overrides the policy's backoff."""

    def __init__(self, message: str, delay_ms: int | None = None) -> None:
        if delay_ms is not None and delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        super().__init__(message)
        self.message = message
        self.delay_ms = delay_ms


class PermanentError(Exception):
    """The attempt failed and retrying cannot help: it goes straight to the dead-letter queue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkflowError(PermanentError):
    """The workflow broke a rule of the SDK (duplicate step name, result that is not JSON)."""


class LeaseLost(BaseException):
    """The server no longer lets this worker act for the attempt; the handler must stop.

    A ``BaseException`` so that a workflow's ``except Exception`` cannot swallow it and carry on
    working on an attempt that now belongs to someone else.
    """


class Suspended(BaseException):
    """The workflow waits for a human answer: the attempt ends as ``interrupted``.

    A ``BaseException`` for the same reason as ``LeaseLost``: it is control flow, not a failure.
    """

    def __init__(self, value: Any, key: str) -> None:
        super().__init__(key)
        self.value = value
        self.key = key


class Sleeping(BaseException):
    """The workflow sleeps until ``wake_at`` (aware UTC): the attempt ends and frees its slot.

    A ``BaseException`` for the same reason as ``Suspended``.
    """

    def __init__(self, key: str, wake_at: datetime) -> None:
        super().__init__(key)
        self.key = key
        self.wake_at = wake_at
