"""Job and attempt states, and how a job's status follows its current attempt."""

from __future__ import annotations

from enum import StrEnum


class AttemptStatus(StrEnum):
    """Status of one attempt (a unit of dispatchable work)."""

    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    RETRY_BACKOFF = "retry_backoff"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    """Status of a job, derived from its current attempt; ``scheduled`` is a queued attempt
    whose start (or wake-up) time is still ahead."""

    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    RETRY_BACKOFF = "retry_backoff"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Waiting for its start time (a delayed run) or its wake-up time (a durable sleep).
    SCHEDULED = "scheduled"


class LeaseState(StrEnum):
    """A lease is active until released by an ack, expired by maintenance, or revoked."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    REVOKED = "revoked"


class InterruptStatus(StrEnum):
    """Status of a human-approval interrupt."""

    PENDING = "pending"
    RESUMED = "resumed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class TerminalStatus(StrEnum):
    """What a worker may report in an ack."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AckOutcome(StrEnum):
    """What an ack resulted in."""

    RETRY_SCHEDULED = "retry_scheduled"
    SLEEPING = "sleeping"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class DeadLetterReason(StrEnum):
    """Why an attempt landed in the dead-letter queue."""

    TERMINAL_FAILED = "terminal_failed"
    EXECUTION_TIMEOUT = "execution_timeout"


class ReplayStatus(StrEnum):
    """Replay state of a dead letter."""

    PENDING = "pending"
    REPLAYED = "replayed"


DISPATCHABLE_ATTEMPT_STATUSES: frozenset[AttemptStatus] = frozenset(
    {AttemptStatus.QUEUED, AttemptStatus.RETRY_BACKOFF}
)
LIVE_ATTEMPT_STATUSES: frozenset[AttemptStatus] = frozenset(
    {
        AttemptStatus.QUEUED,
        AttemptStatus.LEASED,
        AttemptStatus.RUNNING,
        AttemptStatus.RETRY_BACKOFF,
    }
)
ACTIVE_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {
        JobStatus.SCHEDULED,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.RETRY_BACKOFF,
        JobStatus.INTERRUPTED,
    }
)
FINISHED_JOB_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})

_JOB_STATUS_BY_ATTEMPT: dict[AttemptStatus, JobStatus] = {
    AttemptStatus.QUEUED: JobStatus.QUEUED,
    AttemptStatus.LEASED: JobStatus.RUNNING,
    AttemptStatus.RUNNING: JobStatus.RUNNING,
    AttemptStatus.RETRY_BACKOFF: JobStatus.RETRY_BACKOFF,
    AttemptStatus.INTERRUPTED: JobStatus.INTERRUPTED,
    AttemptStatus.COMPLETED: JobStatus.COMPLETED,
    AttemptStatus.FAILED: JobStatus.FAILED,
    AttemptStatus.CANCELLED: JobStatus.CANCELLED,
}


def job_status_for(attempt_status: AttemptStatus) -> JobStatus:
    """The job status implied by the status of its current attempt."""
    return _JOB_STATUS_BY_ATTEMPT[attempt_status]
