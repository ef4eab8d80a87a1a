"""One leased attempt as the poll endpoint hands it to a worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIN_HEARTBEAT_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Dispatch:
    """The fields of a ``dispatches[]`` item the worker acts on."""

    attempt_id: str
    lease_id: str
    thread_id: str
    workflow: str
    attempt_no: int
    lease_ttl_seconds: float
    kind: str = "run"
    run_no: int = 1
    input: Any = None
    tenant_id: str | None = None
    priority: int = 0
    checkpoint_id: str | None = None
    state: Any = None
    resume_value: Any = None
    has_resume_value: bool = False
    trace: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> Dispatch:
        """Parse one dispatch; raises ``KeyError``/``ValueError`` when a required field is absent."""
        checkpoint = item.get("checkpoint")
        if not isinstance(checkpoint, dict):
            checkpoint = {}
        trace = item.get("trace")
        return cls(
            attempt_id=str(item["attempt_id"]),
            lease_id=str(item["lease_id"]),
            thread_id=str(item["thread_id"]),
            workflow=str(item["workflow"]),
            attempt_no=int(item.get("attempt_no") or 1),
            lease_ttl_seconds=float(item["lease_ttl_seconds"]),
            kind=str(item.get("kind") or "run"),
            run_no=int(item.get("run_no") or 1),
            input=item.get("input"),
            tenant_id=item.get("tenant_id"),
            priority=int(item.get("priority") or 0),
            checkpoint_id=checkpoint.get("checkpoint_id"),
            state=checkpoint.get("state"),
            resume_value=item.get("resume_value"),
            has_resume_value=bool(item.get("has_resume_value")),
            trace=dict(trace) if isinstance(trace, dict) else {},
        )

    @property
    def heartbeat_interval_seconds(self) -> float:
        """A third of the lease: two heartbeats may be lost before the lease expires."""
        return max(self.lease_ttl_seconds / 3, MIN_HEARTBEAT_INTERVAL_SECONDS)
