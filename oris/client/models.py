"""Typed results of :class:`oris.client.Client`: frozen dataclasses built from the API's JSON.

Every result keeps the whole response in ``raw``, so fields the server adds later are there
before the client names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True, slots=True)
class Job:
    """A job's current state (``GET /v1/jobs/{thread_id}``)."""

    thread_id: str
    status: str
    workflow: str | None
    input: Any
    output: Any
    error: Any
    run_no: int
    tenant_id: str | None
    priority: int
    checkpoint_id: str | None
    values: Any
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # Why it was cancelled: known when the job came from ``wait`` (or the detail endpoint).
    cancel_reason: str | None = None

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: nothing more will run unless it is replayed."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Job:
        """Build from the API's JSON."""
        return cls(
            thread_id=str(data["thread_id"]),
            status=str(data["status"]),
            workflow=_text(data.get("workflow")),
            input=data.get("input"),
            output=data.get("output"),
            error=data.get("error"),
            run_no=_int(data.get("run_no"), 1),
            tenant_id=_text(data.get("tenant_id")),
            priority=_int(data.get("priority")),
            checkpoint_id=_text(data.get("checkpoint_id")),
            values=data.get("values"),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            raw=data,
            cancel_reason=_text(data.get("cancel_reason")),
        )


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job listing."""

    thread_id: str
    status: str
    workflow: str | None
    tenant_id: str | None
    priority: int
    run_no: int
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobSummary:
        """Build from the API's JSON."""
        return cls(
            thread_id=str(data["thread_id"]),
            status=str(data["status"]),
            workflow=_text(data.get("workflow")),
            tenant_id=_text(data.get("tenant_id")),
            priority=_int(data.get("priority")),
            run_no=_int(data.get("run_no"), 1),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs; pass ``next_cursor`` as ``cursor`` for the next one (None: last page).

    ``total`` counts every matching job on a first page and is None on cursor pages."""

    jobs: list[JobSummary]
    next_cursor: str | None
    total: int | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobPage:
        """Build from the API's JSON."""
        total = data.get("total")
        return cls(
            jobs=[JobSummary.from_api(item) for item in data.get("jobs") or []],
            next_cursor=_text(data.get("next_cursor")),
            total=total if isinstance(total, int) else None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Queued:
    """Work the server queued: a submitted job, a resume or a replay.

    ``idempotent_replay`` is True when the server answered a repeat of an earlier request
    (same idempotency key, same resume value, same replay target) with that request's result."""

    thread_id: str
    status: str
    attempt_id: str | None
    idempotent_replay: bool
    run_no: int | None
    workflow: str | None
    interrupt_id: str | None
    checkpoint_id: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Queued:
        """Build from the API's JSON."""
        run_no = data.get("run_no")
        return cls(
            thread_id=str(data["thread_id"]),
            status=str(data["status"]),
            attempt_id=_text(data.get("attempt_id")),
            idempotent_replay=bool(data.get("idempotent_replay")),
            run_no=run_no if isinstance(run_no, int) else None,
            workflow=_text(data.get("workflow")),
            interrupt_id=_text(data.get("interrupt_id")),
            checkpoint_id=_text(data.get("checkpoint_id")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A cancelled job (``cancel``, or ``reject`` of its interrupt)."""

    thread_id: str
    status: str
    reason: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Cancellation:
        """Build from the API's JSON."""
        return cls(
            thread_id=str(data["thread_id"]),
            status=str(data["status"]),
            reason=_text(data.get("reason")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A job waiting for a human: resume it with a value, or reject it."""

    interrupt_id: str
    thread_id: str
    status: str
    value: Any
    step: str | None
    created_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Interrupt:
        """Build from the API's JSON."""
        return cls(
            interrupt_id=str(data["interrupt_id"]),
            thread_id=str(data["thread_id"]),
            status=str(data["status"]),
            value=data.get("value"),
            step=_text(data.get("step")),
            created_at=_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of :meth:`~oris.client.Client.submit_many` (the arguments of ``submit``)."""

    thread_id: str
    input: Any = None
    workflow: str | None = None
    tenant_id: str | None = None
    priority: int | None = None
    idempotency_key: str | None = None
    retry_policy: Mapping[str, Any] | None = None
    timeout_ms: int | None = None
    on_timeout: str | None = None
