"""Request bodies. Types are checked strictly (a string is not an integer); unknown fields are
ignored, as upstream does."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from oris.domain.validation import INT64_MAX, INT64_MIN, MAX_DURATION_MS


class Body(BaseModel):
    """Base of every request body."""

    model_config = ConfigDict(strict=True, extra="ignore")
    # Whether the string fields end up in text columns or filters (False: only inside JSON).
    text_columns: ClassVar[bool] = True

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        """PostgreSQL text cannot hold U+0000, so no string field bound for a text column may
        carry one, on either backend. JSON values (``input``, ``output``, ``value``, an ack's
        ``error``) are stored as escaped JSON and may."""
        if not cls.text_columns or info.field_name is None:
            return value
        if cls.model_fields[info.field_name].annotation is Any:
            return value
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and "\x00" in item for item in items):
            raise ValueError("must not contain NUL (U+0000) characters")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _int64(cls, value: Any) -> Any:
        """Every integer field is a 64-bit signed integer at most (the database's and the
        arithmetic's range); each field's own range, where it has one, is checked as well."""
        wide = isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX
        if wide:
            raise ValueError(f"must be between {INT64_MIN} and {INT64_MAX}")
        return value


class TimeoutPolicyBody(Body):
    """``TimeoutPolicyRequest``."""

    timeout_ms: int
    on_timeout_status: str


class RetryPolicyBody(Body):
    """``RetryPolicyRequest``."""

    strategy: str
    backoff_ms: int
    max_backoff_ms: int | None = None
    multiplier: float | None = None
    max_retries: int = Field(ge=0)


class RunJobBody(Body):
    """``RunJobRequest`` plus ``workflow`` and ``retry_policy``; ``input`` is any JSON value."""

    thread_id: str
    input: Any = None
    idempotency_key: str | None = None
    timeout_policy: TimeoutPolicyBody | None = None
    priority: int | None = None
    tenant_id: str | None = None
    workflow: str | None = None
    retry_policy: RetryPolicyBody | None = None
    run_at: str | None = None
    delay_ms: int | None = None


class CancelJobBody(Body):
    """``CancelJobRequest``."""

    reason: str | None = Field(default=None, max_length=2000)


class ResumeJobBody(Body):
    """``ResumeJobRequest``."""

    value: Any
    checkpoint_id: str | None = None
    override_reason: str | None = None


class ReplayJobBody(Body):
    """``ReplayJobRequest``."""

    checkpoint_id: str | None = None
    override_reason: str | None = None


class ResumeInterruptBody(Body):
    """``ResumeInterruptRequest``."""

    value: Any
    override_reason: str | None = None


class RejectInterruptBody(Body):
    """``RejectInterruptRequest``."""

    reason: str | None = Field(default=None, max_length=2000)


class HeartbeatBody(Body):
    """``WorkerHeartbeatRequest`` / ``WorkerExtendLeaseRequest``."""

    lease_id: str
    lease_ttl_seconds: int | None = None
    # An extension: the attempt's outcome is decided and only its ack remains.
    settling: bool | None = None


class CheckpointBody(Body):
    """A state snapshot a worker stores with a step report."""

    state: Any
    step: str | None = None


class ReportStepBody(Body):
    """``WorkerReportStepRequest`` plus ``lease_id`` and ``checkpoint``."""

    attempt_id: str
    action_id: str
    status: str
    dedupe_token: str
    lease_id: str | None = None
    checkpoint: CheckpointBody | None = None


class ErrorBody(Body):
    """What went wrong in a failed attempt."""

    model_config = ConfigDict(strict=True, extra="allow")
    text_columns: ClassVar[bool] = False  # stored as the attempt's error JSON

    message: str | None = None
    type: str | None = None
    retryable: bool | None = None
    retry_delay_ms: int | None = Field(default=None, ge=0, le=MAX_DURATION_MS)


class InterruptBody(Body):
    """The interrupt a worker opens when its workflow waits for a human."""

    value: Any
    step: str | None = None


class AckBody(Body):
    """``WorkerAckRequest`` plus ``lease_id``, ``output``, ``error`` and ``interrupt``."""

    attempt_id: str
    terminal_status: str
    retry_policy: RetryPolicyBody | None = None
    lease_id: str | None = None
    output: Any = None
    error: ErrorBody | None = None
    interrupt: InterruptBody | None = None
    wake_at: str | None = None


class AckBatchItem(AckBody):
    """One ack of a batch; ``traceparent`` ties it to its job's trace."""

    traceparent: str | None = None


class WorkflowDefaultsBody(Body):
    """What a worker's workflow declares for jobs without their own policy (an extension)."""

    retry_policy: RetryPolicyBody | None = None
    timeout_ms: int | None = None


class PollBody(Body):
    """``WorkerPollRequest`` plus ``workflows``, ``wait_ms`` and the worker's finished ``acks``."""

    worker_id: str
    limit: int | None = None
    max_active_leases: int | None = None
    tenant_max_active_leases: int | None = None
    workflows: list[str] | None = None
    wait_ms: int | None = None
    acks: list[AckBatchItem] | None = None
    workflow_defaults: dict[str, WorkflowDefaultsBody] | None = None


class AckBatchBody(Body):
    """Many acks in one request (an extension; see docs/worker-protocol.md)."""

    acks: list[AckBatchItem]


class CreateKeyBody(Body):
    """Create a managed API key."""

    role: str
    key_id: str | None = None
    worker_id_prefix: str | None = None
    description: str | None = Field(default=None, max_length=500)


class RotateKeyBody(Body):
    """Rotate a key's secret; ``reactivate`` is required to rotate a disabled key."""

    reactivate: bool = False


class OpenIncidentBody(Body):
    """Open an incident (freeze risky operator actions)."""

    reason: str


class CloseIncidentBody(Body):
    """Close the open incident."""

    reason: str | None = None


class PurgeJobsBody(Body):
    """Purge finished jobs (admin): one batch of jobs in ``status`` older than the cut-off."""

    status: str
    older_than_seconds: int = Field(ge=0, le=100 * 365 * 86_400)
    dry_run: bool = False
    limit: int = Field(default=1000, ge=1, le=1000)
    thread_ids: list[str] | None = Field(default=None, max_length=1000)
    include_rows: bool = False


class ArchiveAuditBody(Body):
    """Archive the oldest part of the audit chain (admin): a dry run reads the next rows; a
    real run removes them through ``through_audit_id``, named by its ``through_row_hash``."""

    # 9999-12-31T23:59:59.999Z: the latest instant an RFC 3339 answer can show.
    before_ms: int = Field(ge=0, le=253_402_300_799_999)
    dry_run: bool = False
    limit: int = Field(default=1000, ge=1, le=5000)
    through_audit_id: int | None = Field(default=None, ge=1)
    through_row_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class BulkFilterBody(Body):
    """The selection of a bulk operator action (an extension; see docs/compatibility.md)."""

    workflow: str | None = None
    tenant_id: str | None = None
    status: str | None = None
    created_after: str | int | None = None
    created_before: str | int | None = None
    thread_ids: list[str] | None = None
    schedule_id: str | None = None
    limit: int | None = None
    dry_run: bool = False


class BulkCancelBody(BulkFilterBody):
    """``POST /v1/jobs/cancel``."""

    reason: str | None = Field(default=None, max_length=2000)


class BulkReplayBody(BulkFilterBody):
    """``POST /v1/dlq/replay``."""

    override_reason: str | None = None


class CreateScheduleBody(Body):
    """Define a schedule (an extension; see docs/schedules.md)."""

    schedule_id: str
    workflow: str
    input: Any = None
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str | None = None
    tenant_id: str | None = None
    priority: int | None = None
    retry_policy: RetryPolicyBody | None = None
    overlap: str | None = None
    catch_up: str | None = None
