"""Typed views of stored rows, and JSON (de)serialisation shared by the queries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import RowMapping


def dump_json(value: Any) -> str:
    """Serialise a JSON value for a text column."""
    return orjson.dumps(value).decode()


def load_json(raw: str | None) -> Any:
    """Parse a JSON text column; None stays None."""
    return None if raw is None else orjson.loads(raw)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A row of ``runtime_jobs``."""

    thread_id: str
    status: str
    workflow: str
    input: Any
    tenant_id: str | None
    priority: int
    timeout_ms: int | None
    timeout_status: str | None
    retry_policy: dict[str, Any] | None
    run_no: int
    current_attempt_id: str | None
    output: Any
    error: Any
    cancel_reason: str | None
    created_at_ms: int
    updated_at_ms: int
    run_at_ms: int | None = None
    schedule_id: str | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> JobRecord:
        """Build from a selected row."""
        return cls(
            thread_id=row["thread_id"],
            status=row["status"],
            workflow=row["workflow"],
            input=load_json(row["input_json"]),
            tenant_id=row["tenant_id"],
            priority=row["priority"],
            timeout_ms=row["timeout_ms"],
            timeout_status=row["timeout_status"],
            retry_policy=load_json(row["retry_policy_json"]),
            run_no=row["run_no"],
            current_attempt_id=row["current_attempt_id"],
            output=load_json(row["output_json"]),
            error=load_json(row["error_json"]),
            cancel_reason=row["cancel_reason"],
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
            run_at_ms=row.get("run_at_ms"),
            schedule_id=row.get("schedule_id"),
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A row of ``runtime_attempts``."""

    seq: int
    attempt_id: str
    run_id: str
    run_no: int
    attempt_no: int
    retry_base_no: int
    status: str
    kind: str
    workflow: str
    priority: int
    tenant_id: str | None
    available_at_ms: int
    retry_at_ms: int | None
    started_at_ms: int | None
    lease_expired_at_ms: int | None
    execution_timeout_ms: int | None
    timeout_terminal_status: str | None
    retry_policy: dict[str, Any] | None
    trace_id: str | None
    trace_parent_span_id: str | None
    trace_span_id: str | None
    trace_flags: str
    start_checkpoint_id: str | None
    resume_value: Any
    has_resume_value: bool
    output: Any
    error: Any
    created_at_ms: int
    updated_at_ms: int
    finished_at_ms: int | None

    @classmethod
    def from_row(cls, row: RowMapping) -> AttemptRecord:
        """Build from a selected row."""
        policy = None
        if row["retry_strategy"] is not None:
            policy = {
                "strategy": row["retry_strategy"],
                "backoff_ms": row["retry_backoff_ms"],
                "max_backoff_ms": row["retry_max_backoff_ms"],
                "multiplier": row["retry_multiplier"],
                "max_retries": row["retry_max_retries"],
            }
        resume_raw = row["resume_value_json"]
        return cls(
            seq=row["seq"],
            attempt_id=row["attempt_id"],
            run_id=row["run_id"],
            run_no=row["run_no"],
            attempt_no=row["attempt_no"],
            retry_base_no=row["retry_base_no"],
            status=row["status"],
            kind=row["kind"],
            workflow=row["workflow"],
            priority=row["priority"],
            tenant_id=row["tenant_id"],
            available_at_ms=row["available_at_ms"],
            retry_at_ms=row["retry_at_ms"],
            started_at_ms=row["started_at_ms"],
            lease_expired_at_ms=row["lease_expired_at_ms"],
            execution_timeout_ms=row["execution_timeout_ms"],
            timeout_terminal_status=row["timeout_terminal_status"],
            retry_policy=policy,
            trace_id=row["trace_id"],
            trace_parent_span_id=row["trace_parent_span_id"],
            trace_span_id=row["trace_span_id"],
            trace_flags=row["trace_flags"],
            start_checkpoint_id=row["start_checkpoint_id"],
            resume_value=load_json(resume_raw),
            has_resume_value=resume_raw is not None,
            output=load_json(row["output_json"]),
            error=load_json(row["error_json"]),
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
            finished_at_ms=row["finished_at_ms"],
        )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A row of ``runtime_leases``."""

    lease_id: str
    attempt_id: str
    worker_id: str
    tenant_id: str | None
    state: str
    acquired_at_ms: int
    heartbeat_at_ms: int
    lease_expires_at_ms: int
    ended_at_ms: int | None
    version: int
    ack_hash: str | None
    ack_response: Any

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> LeaseRecord:
        """Build from a selected row."""
        return cls(
            lease_id=row["lease_id"],
            attempt_id=row["attempt_id"],
            worker_id=row["worker_id"],
            tenant_id=row["tenant_id"],
            state=row["state"],
            acquired_at_ms=row["acquired_at_ms"],
            heartbeat_at_ms=row["heartbeat_at_ms"],
            lease_expires_at_ms=row["lease_expires_at_ms"],
            ended_at_ms=row["ended_at_ms"],
            version=row["version"],
            ack_hash=row["ack_hash"],
            ack_response=load_json(row["ack_response_json"]),
        )


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A row of ``runtime_checkpoints``."""

    checkpoint_id: str
    thread_id: str
    attempt_id: str | None
    seq: int
    step: str | None
    state: Any
    created_at_ms: int

    @classmethod
    def from_row(cls, row: RowMapping) -> CheckpointRecord:
        """Build from a selected row."""
        return cls(
            checkpoint_id=row["checkpoint_id"],
            thread_id=row["thread_id"],
            attempt_id=row["attempt_id"],
            seq=row["seq"],
            step=row["step"],
            state=load_json(row["state_json"]),
            created_at_ms=row["created_at_ms"],
        )


@dataclass(frozen=True, slots=True)
class TimelineRecord:
    """A row of ``runtime_timeline_events``."""

    event_id: int
    thread_id: str
    attempt_id: str | None
    event_type: str
    checkpoint_id: str | None
    details: Any
    created_at_ms: int

    @classmethod
    def from_row(cls, row: RowMapping) -> TimelineRecord:
        """Build from a selected row."""
        return cls(
            event_id=row["event_id"],
            thread_id=row["thread_id"],
            attempt_id=row["attempt_id"],
            event_type=row["event_type"],
            checkpoint_id=row["checkpoint_id"],
            details=load_json(row["details_json"]),
            created_at_ms=row["created_at_ms"],
        )


@dataclass(frozen=True, slots=True)
class InterruptRecord:
    """A row of ``runtime_interrupts``."""

    interrupt_id: str
    thread_id: str
    run_id: str
    attempt_id: str
    step: str | None
    value: Any
    status: str
    created_at_ms: int
    resume_payload_hash: str | None
    resume_response: Any
    resumed_at_ms: int | None
    reject_reason: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> InterruptRecord:
        """Build from a selected row."""
        return cls(
            interrupt_id=row["interrupt_id"],
            thread_id=row["thread_id"],
            run_id=row["run_id"],
            attempt_id=row["attempt_id"],
            step=row["step"],
            value=load_json(row["value_json"]),
            status=row["status"],
            created_at_ms=row["created_at_ms"],
            resume_payload_hash=row["resume_payload_hash"],
            resume_response=load_json(row["resume_response_json"]),
            resumed_at_ms=row["resumed_at_ms"],
            reject_reason=row["reject_reason"],
        )


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A row of ``runtime_dead_letters``."""

    attempt_id: str
    run_id: str
    attempt_no: int
    terminal_status: str
    reason: str | None
    error: Any
    dead_at_ms: int
    replay_status: str
    replay_count: int
    last_replayed_at_ms: int | None
    workflow: str | None = None
    tenant_id: str | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> DeadLetterRecord:
        """Build from a selected row."""
        return cls(
            attempt_id=row["attempt_id"],
            run_id=row["run_id"],
            attempt_no=row["attempt_no"],
            terminal_status=row["terminal_status"],
            reason=row["reason"],
            error=load_json(row["error_json"]),
            dead_at_ms=row["dead_at_ms"],
            replay_status=row["replay_status"],
            replay_count=row["replay_count"],
            last_replayed_at_ms=row["last_replayed_at_ms"],
            workflow=row["workflow"],
            tenant_id=row["tenant_id"],
        )


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A row of ``runtime_schedules``."""

    schedule_id: str
    workflow: str
    input: Any
    cron: str | None
    every_seconds: int | None
    timezone: str
    tenant_id: str | None
    priority: int
    retry_policy: dict[str, Any] | None
    overlap: str
    catch_up: str
    definition_hash: str
    status: str
    next_run_at_ms: int
    last_run_at_ms: int | None
    last_thread_id: str | None
    created_at_ms: int
    updated_at_ms: int

    @classmethod
    def from_row(cls, row: RowMapping) -> ScheduleRecord:
        """Build from a selected row."""
        return cls(
            schedule_id=row["schedule_id"],
            workflow=row["workflow"],
            input=load_json(row["input_json"]),
            cron=row["cron"],
            every_seconds=row["every_seconds"],
            timezone=row["timezone"],
            tenant_id=row["tenant_id"],
            priority=row["priority"],
            retry_policy=load_json(row["retry_policy_json"]),
            overlap=row["overlap"],
            catch_up=row["catch_up"],
            definition_hash=row["definition_hash"],
            status=row["status"],
            next_run_at_ms=row["next_run_at_ms"],
            last_run_at_ms=row["last_run_at_ms"],
            last_thread_id=row["last_thread_id"],
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
        )
