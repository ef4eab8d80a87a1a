"""Render stored records as the wire shapes of upstream's API (plus additive fields)."""

from __future__ import annotations

from typing import Any

from oris.domain.clock import optional_rfc3339, to_rfc3339
from oris.domain.trace import TraceContext
from oris.store.records import (
    AttemptRecord,
    CheckpointRecord,
    DeadLetterRecord,
    InterruptRecord,
    JobRecord,
    LeaseRecord,
    TimelineRecord,
)


def trace_view(trace: TraceContext | None) -> dict[str, Any] | None:
    """``TraceContextResponse``."""
    if trace is None:
        return None
    return {
        "trace_id": trace.trace_id,
        "span_id": trace.span_id,
        "parent_span_id": trace.parent_span_id,
        "traceparent": trace.traceparent,
    }


def attempt_trace(attempt: AttemptRecord) -> TraceContext | None:
    """The trace context stored on an attempt."""
    if attempt.trace_id is None or attempt.trace_span_id is None:
        return None
    return TraceContext(
        attempt.trace_id, attempt.trace_span_id, attempt.trace_parent_span_id, attempt.trace_flags
    )


def job_list_item(job: JobRecord) -> dict[str, Any]:
    """``JobListItem`` plus workflow, tenant and timestamps."""
    return {
        "thread_id": job.thread_id,
        "status": job.status,
        "updated_at": to_rfc3339(job.updated_at_ms),
        "created_at": to_rfc3339(job.created_at_ms),
        "workflow": job.workflow,
        "tenant_id": job.tenant_id,
        "priority": job.priority,
        "run_no": job.run_no,
        "run_at": optional_rfc3339(job.run_at_ms),
        "schedule_id": job.schedule_id,
    }


def checkpoint_item(checkpoint: CheckpointRecord) -> dict[str, Any]:
    """``JobHistoryItem`` plus step and attempt."""
    return {
        "checkpoint_id": checkpoint.checkpoint_id,
        "created_at": to_rfc3339(checkpoint.created_at_ms),
        "seq": checkpoint.seq,
        "step": checkpoint.step,
        "attempt_id": checkpoint.attempt_id,
    }


def timeline_items(events: list[TimelineRecord]) -> list[dict[str, Any]]:
    """``JobTimelineItem`` list, ``seq`` 1-based, plus attempt and details."""
    return [
        {
            "seq": index,
            "event_type": event.event_type,
            "checkpoint_id": event.checkpoint_id,
            "created_at": to_rfc3339(event.created_at_ms),
            "attempt_id": event.attempt_id,
            "details": event.details,
        }
        for index, event in enumerate(events, start=1)
    ]


def observability_view(
    checkpoints: list[CheckpointRecord],
    events: list[TimelineRecord],
    thread_leases: list[LeaseRecord],
) -> dict[str, Any] | None:
    """Upstream's ``observability`` object (``KernelObservability``), filled from the store.

    ``reasoning_timeline`` names each checkpoint (``CheckpointSaved#<seq + 1>``), ``replay_cost``
    counts the checkpoints, ``lease_graph`` lists ``[attempt_id, worker_id]`` for every lease
    granted on the thread, oldest first, and ``interrupt_latency_ms`` is the milliseconds from
    the opening to the resume of the most recently resumed interrupt (null if none was)."""
    if not checkpoints:
        return None
    return {
        "reasoning_timeline": [f"CheckpointSaved#{cp.seq + 1}" for cp in checkpoints],
        "lease_graph": [[lease.attempt_id, lease.worker_id] for lease in thread_leases],
        "replay_cost": len(checkpoints),
        "interrupt_latency_ms": _interrupt_latency_ms(events),
    }


def _interrupt_latency_ms(events: list[TimelineRecord]) -> int | None:
    opened: dict[Any, int] = {}
    latency: int | None = None
    for event in events:
        details = event.details if isinstance(event.details, dict) else {}
        interrupt_id = details.get("interrupt_id")
        if interrupt_id is None:
            continue
        if event.event_type == "interrupt_opened":
            opened[interrupt_id] = event.created_at_ms
        elif event.event_type == "interrupt_resumed" and interrupt_id in opened:
            latency = max(event.created_at_ms - opened[interrupt_id], 0)
    return latency


def interrupt_view(interrupt: InterruptRecord, *, with_attempt: bool = True) -> dict[str, Any]:
    """``InterruptDetailResponse`` (or list item without ``attempt_id``)."""
    view: dict[str, Any] = {
        "interrupt_id": interrupt.interrupt_id,
        "thread_id": interrupt.thread_id,
        "run_id": interrupt.run_id,
        "value": interrupt.value,
        "status": interrupt.status,
        "created_at": to_rfc3339(interrupt.created_at_ms),
        "step": interrupt.step,
        "resumed_at": optional_rfc3339(interrupt.resumed_at_ms),
        "reject_reason": interrupt.reject_reason,
    }
    if with_attempt:
        view["attempt_id"] = interrupt.attempt_id
    return view


def lease_view(lease: LeaseRecord) -> dict[str, Any]:
    """A lease as shown in job detail (the holder is shown to operators, never in conflicts)."""
    return {
        "lease_id": lease.lease_id,
        "worker_id": lease.worker_id,
        "state": lease.state,
        "acquired_at": to_rfc3339(lease.acquired_at_ms),
        "lease_expires_at": to_rfc3339(lease.lease_expires_at_ms),
        "ended_at": optional_rfc3339(lease.ended_at_ms),
    }


def attempt_view(attempt: AttemptRecord, attempt_leases: list[LeaseRecord]) -> dict[str, Any]:
    """An attempt with its leases, as shown in job detail."""
    active = next((lease for lease in attempt_leases if lease.state == "active"), None)
    return {
        "attempt_id": attempt.attempt_id,
        "attempt_no": attempt.attempt_no,
        "run_no": attempt.run_no,
        "kind": attempt.kind,
        "status": attempt.status,
        "workflow": attempt.workflow,
        "created_at": to_rfc3339(attempt.created_at_ms),
        "finished_at": optional_rfc3339(attempt.finished_at_ms),
        "retry_at": optional_rfc3339(attempt.retry_at_ms),
        "lease_holder": None if active is None else active.worker_id,
        "leases": [lease_view(lease) for lease in attempt_leases],
        "error": attempt.error,
    }


def dead_letter_view(entry: DeadLetterRecord) -> dict[str, Any]:
    """``DeadLetterItem`` plus the last error."""
    return {
        "attempt_id": entry.attempt_id,
        "run_id": entry.run_id,
        "attempt_no": entry.attempt_no,
        "terminal_status": entry.terminal_status,
        "reason": entry.reason,
        "dead_at": to_rfc3339(entry.dead_at_ms),
        "replay_status": entry.replay_status,
        "replay_count": entry.replay_count,
        "last_replayed_at": optional_rfc3339(entry.last_replayed_at_ms),
        "error": entry.error,
        "workflow": entry.workflow,
        "tenant_id": entry.tenant_id,
    }
