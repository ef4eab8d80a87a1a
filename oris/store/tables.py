"""The runtime schema, shared by PostgreSQL and SQLite.

Timestamps are epoch milliseconds (BIGINT). JSON payloads are stored as text so both
dialects treat them the same. Alembic revisions under ``migrations/`` build exactly this
schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)

metadata = MetaData()


def inline(value: str) -> ColumnElement[str]:
    """A string constant written into the SQL text instead of bound as a parameter.

    Predicates that match a partial index must be literal: a prepared statement's generic plan
    cannot prove ``state = $1`` implies ``state = 'active'`` and falls back to scanning.
    """
    return literal_column("'" + value.replace("'", "''") + "'", String)


# SQLite only auto-increments a column declared exactly "INTEGER PRIMARY KEY".
Serial = BigInteger().with_variant(Integer(), "sqlite")

ID = 128  # identifiers: thread, attempt, lease, worker, tenant, key ids
LONG_ID = 256  # generated ids that embed another id

schema_migrations = Table(
    "runtime_schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_at_ms", BigInteger, nullable=False),
)

jobs = Table(
    "runtime_jobs",
    metadata,
    Column("thread_id", String(ID), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("workflow", String(ID), nullable=False),
    Column("input_json", Text, nullable=False),
    Column("tenant_id", String(ID), nullable=True),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("timeout_ms", BigInteger, nullable=True),
    Column("timeout_status", String(32), nullable=True),
    Column("retry_policy_json", Text, nullable=True),
    Column("run_no", Integer, nullable=False, server_default=text("1")),
    Column("current_attempt_id", String(LONG_ID), nullable=True),
    Column("output_json", Text, nullable=True),
    Column("error_json", Text, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    # When a delayed start or a durable sleep is due (the current attempt's available_at_ms).
    Column("run_at_ms", BigInteger, nullable=True),
    # The schedule whose tick queued the job.
    Column("schedule_id", String(ID), nullable=True),
)
Index("idx_runtime_jobs_updated", jobs.c.updated_at_ms.desc(), jobs.c.thread_id)
Index("idx_runtime_jobs_status_updated", jobs.c.status, jobs.c.updated_at_ms.desc())
# Filtered listings page on these (keyset: the order's timestamp, then the thread id).
Index(
    "idx_runtime_jobs_workflow_updated",
    jobs.c.workflow,
    jobs.c.updated_at_ms.desc(),
    jobs.c.thread_id,
)
# Tenant first: a tenant's listing, and a tenant's listing of one workflow.
Index(
    "idx_runtime_jobs_tenant_updated",
    jobs.c.tenant_id,
    jobs.c.workflow,
    jobs.c.updated_at_ms.desc(),
    jobs.c.thread_id,
)
Index("idx_runtime_jobs_created", jobs.c.created_at_ms.desc(), jobs.c.thread_id)
# Waiting jobs by due time: maintenance finds the due ones without reading the others.
Index(
    "idx_runtime_jobs_scheduled_run_at",
    jobs.c.run_at_ms,
    postgresql_where=text("status = 'scheduled'"),
    sqlite_where=text("status = 'scheduled'"),
)
Index(
    "idx_runtime_jobs_schedule",
    jobs.c.schedule_id,
    jobs.c.created_at_ms,
    postgresql_where=text("schedule_id IS NOT NULL"),
    sqlite_where=text("schedule_id IS NOT NULL"),
)

attempts = Table(
    "runtime_attempts",
    metadata,
    # ``seq`` breaks ties in dispatch order (FIFO), which text ids cannot do (G9).
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("attempt_id", String(LONG_ID), nullable=False, unique=True),
    Column("run_id", String(ID), nullable=False),
    Column("run_no", Integer, nullable=False, server_default=text("1")),
    Column("attempt_no", Integer, nullable=False),
    # Retries are counted from here; a DLQ replay moves it up to grant a fresh budget.
    Column("retry_base_no", Integer, nullable=False, server_default=text("0")),
    Column("status", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("workflow", String(ID), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("tenant_id", String(ID), nullable=True),
    # When the attempt becomes dispatchable: enqueue time, or the retry's due time.
    Column("available_at_ms", BigInteger, nullable=False),
    Column("retry_at_ms", BigInteger, nullable=True),
    Column("started_at_ms", BigInteger, nullable=True),
    Column("lease_expired_at_ms", BigInteger, nullable=True),
    Column("execution_timeout_ms", BigInteger, nullable=True),
    Column("timeout_terminal_status", String(32), nullable=True),
    Column("retry_strategy", String(32), nullable=True),
    Column("retry_backoff_ms", BigInteger, nullable=True),
    Column("retry_max_backoff_ms", BigInteger, nullable=True),
    Column("retry_multiplier", Float, nullable=True),
    Column("retry_max_retries", Integer, nullable=True),
    Column("trace_id", String(32), nullable=True),
    Column("trace_parent_span_id", String(16), nullable=True),
    Column("trace_span_id", String(16), nullable=True),
    Column("trace_flags", String(2), nullable=False, server_default=text("'01'")),
    Column("start_checkpoint_id", String(LONG_ID), nullable=True),
    Column("resume_value_json", Text, nullable=True),
    Column("output_json", Text, nullable=True),
    Column("error_json", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Column("finished_at_ms", BigInteger, nullable=True),
)
Index("idx_runtime_attempts_run", attempts.c.run_id, attempts.c.seq)
# The claim index: only dispatchable rows, in dispatch order.
Index(
    "idx_runtime_attempts_dispatch",
    attempts.c.priority.desc(),
    attempts.c.available_at_ms,
    attempts.c.seq,
    postgresql_where=text("status IN ('queued', 'retry_backoff')"),
    sqlite_where=text("status IN ('queued', 'retry_backoff')"),
)
Index("idx_runtime_attempts_status", attempts.c.status)
Index(
    "idx_runtime_attempts_timeout",
    attempts.c.started_at_ms,
    postgresql_where=text("execution_timeout_ms IS NOT NULL AND status IN ('leased', 'running')"),
    sqlite_where=text("execution_timeout_ms IS NOT NULL AND status IN ('leased', 'running')"),
)
Index("idx_runtime_attempts_trace_id", attempts.c.trace_id)

leases = Table(
    "runtime_leases",
    metadata,
    Column("lease_id", String(LONG_ID), primary_key=True),
    Column("attempt_id", String(LONG_ID), nullable=False),
    Column("worker_id", String(ID), nullable=False),
    Column("tenant_id", String(ID), nullable=True),
    Column("state", String(16), nullable=False),
    Column("acquired_at_ms", BigInteger, nullable=False),
    Column("heartbeat_at_ms", BigInteger, nullable=False),
    Column("lease_expires_at_ms", BigInteger, nullable=False),
    Column("ended_at_ms", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
    # The ack that released the lease, so a repeated ack returns the same answer.
    Column("ack_hash", String(64), nullable=True),
    Column("ack_response_json", Text, nullable=True),
    # Set by the first heartbeat that says the attempt's outcome is decided (revision 6).
    Column("settling_since_ms", BigInteger, nullable=True),
)
# At most one active lease per attempt, enforced by the database on both backends.
Index(
    "uq_runtime_leases_active_attempt",
    leases.c.attempt_id,
    unique=True,
    postgresql_where=text("state = 'active'"),
    sqlite_where=text("state = 'active'"),
)
Index("idx_runtime_leases_attempt", leases.c.attempt_id)
Index(
    "idx_runtime_leases_active_expiry",
    leases.c.lease_expires_at_ms,
    postgresql_where=text("state = 'active'"),
    sqlite_where=text("state = 'active'"),
)
Index(
    "idx_runtime_leases_active_worker",
    leases.c.worker_id,
    postgresql_where=text("state = 'active'"),
    sqlite_where=text("state = 'active'"),
)
Index(
    "idx_runtime_leases_active_tenant",
    leases.c.tenant_id,
    postgresql_where=text("state = 'active'"),
    sqlite_where=text("state = 'active'"),
)

checkpoints = Table(
    "runtime_checkpoints",
    metadata,
    Column("checkpoint_id", String(LONG_ID), primary_key=True),
    Column("thread_id", String(ID), nullable=False),
    Column("attempt_id", String(LONG_ID), nullable=True),
    Column("seq", Integer, nullable=False),
    Column("step", String(LONG_ID), nullable=True),
    Column("state_json", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    UniqueConstraint("thread_id", "seq", name="uq_runtime_checkpoints_thread_seq"),
)

timeline_events = Table(
    "runtime_timeline_events",
    metadata,
    Column("event_id", Serial, primary_key=True, autoincrement=True),
    Column("thread_id", String(ID), nullable=False),
    Column("attempt_id", String(LONG_ID), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("checkpoint_id", String(LONG_ID), nullable=True),
    Column("details_json", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
)
Index("idx_runtime_timeline_thread", timeline_events.c.thread_id, timeline_events.c.event_id)

interrupts = Table(
    "runtime_interrupts",
    metadata,
    Column("interrupt_id", String(LONG_ID), primary_key=True),
    Column("thread_id", String(ID), nullable=False),
    Column("run_id", String(ID), nullable=False),
    Column("attempt_id", String(LONG_ID), nullable=False),
    Column("step", String(LONG_ID), nullable=True),
    Column("value_json", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("resume_payload_hash", String(64), nullable=True),
    Column("resume_response_json", Text, nullable=True),
    Column("resumed_at_ms", BigInteger, nullable=True),
    Column("reject_reason", Text, nullable=True),
)
Index("idx_runtime_interrupts_status_created", interrupts.c.status, interrupts.c.created_at_ms)
Index("idx_runtime_interrupts_thread", interrupts.c.thread_id, interrupts.c.created_at_ms)

step_reports = Table(
    "runtime_step_reports",
    metadata,
    Column("report_id", Serial, primary_key=True, autoincrement=True),
    Column("worker_id", String(ID), nullable=False),
    Column("attempt_id", String(LONG_ID), nullable=False),
    Column("action_id", String(LONG_ID), nullable=False),
    Column("status", String(64), nullable=False),
    Column("dedupe_token", String(LONG_ID), nullable=False),
    Column("payload_hash", String(64), nullable=True),
    Column("checkpoint_id", String(LONG_ID), nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    UniqueConstraint("attempt_id", "dedupe_token", name="uq_runtime_step_reports_dedupe"),
)

retry_history = Table(
    "runtime_attempt_retry_history",
    metadata,
    Column("retry_id", Serial, primary_key=True, autoincrement=True),
    Column("attempt_id", String(LONG_ID), nullable=False),
    Column("attempt_no", Integer, nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("backoff_ms", BigInteger, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("scheduled_at_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)
Index("idx_runtime_retry_history_attempt", retry_history.c.attempt_id, retry_history.c.retry_id)

dead_letters = Table(
    "runtime_dead_letters",
    metadata,
    Column("attempt_id", String(LONG_ID), primary_key=True),
    Column("run_id", String(ID), nullable=False),
    Column("attempt_no", Integer, nullable=False),
    Column("terminal_status", String(32), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("error_json", Text, nullable=True),
    Column("dead_at_ms", BigInteger, nullable=False),
    Column("replay_status", String(32), nullable=False),
    Column("replay_count", Integer, nullable=False, server_default=text("0")),
    Column("last_replayed_at_ms", BigInteger, nullable=True),
    # The dead attempt's, so the DLQ filters on its own rows (null on rows older than 0005
    # whose attempt was gone when it ran).
    Column("workflow", String(ID), nullable=True),
    Column("tenant_id", String(ID), nullable=True),
)
Index(
    "idx_runtime_dead_letters_status_dead_at",
    dead_letters.c.replay_status,
    dead_letters.c.dead_at_ms.desc(),
)
Index("idx_runtime_dead_letters_dead_at", dead_letters.c.dead_at_ms.desc())

replay_effects = Table(
    "runtime_replay_effects",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("thread_id", String(ID), nullable=False),
    Column("replay_target", String(LONG_ID), nullable=False),
    Column("effect_type", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("execution_count", Integer, nullable=False, server_default=text("0")),
    Column("attempt_id", String(LONG_ID), nullable=True),
    Column("claim_expires_at_ms", BigInteger, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("completed_at_ms", BigInteger, nullable=True),
    Column("response_json", Text, nullable=True),
)
Index(
    "idx_runtime_replay_effects_thread_created",
    replay_effects.c.thread_id,
    replay_effects.c.created_at_ms,
)

idempotency = Table(
    "runtime_idempotency",
    metadata,
    Column("idempotency_key", String(ID), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("thread_id", String(ID), nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("response_json", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)
Index("idx_runtime_idempotency_thread", idempotency.c.thread_id)

audit_logs = Table(
    "runtime_audit_logs",
    metadata,
    Column("audit_id", Serial, primary_key=True, autoincrement=True),
    Column("actor_type", String(32), nullable=False),
    Column("actor_id", String(ID), nullable=True),
    Column("actor_role", String(32), nullable=True),
    Column("action", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(LONG_ID), nullable=True),
    Column("result", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("request_id", String(ID), nullable=False),
    Column("source_addr", String(64), nullable=True),
    Column("details_json", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=True),
    Column("row_hash", String(64), nullable=True),
)
Index("idx_runtime_audit_logs_created", audit_logs.c.created_at_ms.desc())
Index("idx_runtime_audit_logs_request", audit_logs.c.request_id)
Index("idx_runtime_audit_logs_action", audit_logs.c.action, audit_logs.c.created_at_ms.desc())

# Where the archived part of the audit chain ends (one row, ``anchor_id`` 1): verification
# of the rows that remain starts from ``last_row_hash``.
audit_anchor = Table(
    "runtime_audit_anchor",
    metadata,
    Column("anchor_id", Integer, primary_key=True, autoincrement=False),
    Column("last_audit_id", BigInteger, nullable=False),
    Column("last_row_hash", String(64), nullable=False),
    Column("archived_rows", BigInteger, nullable=False),
    Column("archived_at_ms", BigInteger, nullable=False),
)

api_keys = Table(
    "runtime_api_keys",
    metadata,
    Column("key_id", String(ID), primary_key=True),
    Column("secret_hash", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("role", String(16), nullable=False, server_default=text("'operator'")),
    Column("worker_id_prefix", String(ID), nullable=True),
    Column("description", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Column("last_used_at_ms", BigInteger, nullable=True),
)
Index("idx_runtime_api_keys_status", api_keys.c.status)

incidents = Table(
    "runtime_incidents",
    metadata,
    Column("incident_id", String(ID), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("opened_by", String(ID), nullable=True),
    Column("opened_at_ms", BigInteger, nullable=False),
    Column("closed_by", String(ID), nullable=True),
    Column("closed_at_ms", BigInteger, nullable=True),
    Column("close_reason", Text, nullable=True),
)
# One open incident at a time: the freeze is a single switch.
Index(
    "uq_runtime_incidents_open",
    incidents.c.status,
    unique=True,
    postgresql_where=text("status = 'open'"),
    sqlite_where=text("status = 'open'"),
)

workers = Table(
    "runtime_workers",
    metadata,
    Column("worker_id", String(ID), primary_key=True),
    Column("first_seen_at_ms", BigInteger, nullable=False),
    Column("last_seen_at_ms", BigInteger, nullable=False),
    Column("last_decision", String(32), nullable=True),
)
Index("idx_runtime_workers_last_seen", workers.c.last_seen_at_ms.desc())

schedules = Table(
    "runtime_schedules",
    metadata,
    Column("schedule_id", String(ID), primary_key=True),
    Column("workflow", String(ID), nullable=False),
    Column("input_json", Text, nullable=False),
    Column("cron", String(256), nullable=True),
    Column("every_seconds", BigInteger, nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("tenant_id", String(ID), nullable=True),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("retry_policy_json", Text, nullable=True),
    Column("overlap", String(16), nullable=False),
    Column("catch_up", String(16), nullable=False),
    # Fingerprint of the definition: a repeated create with the same one is idempotent.
    Column("definition_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    # The next tick not yet handled; replicas advance it with a compare-and-set.
    Column("next_run_at_ms", BigInteger, nullable=False),
    Column("last_run_at_ms", BigInteger, nullable=True),
    Column("last_thread_id", String(ID), nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)
Index("idx_runtime_schedules_next_run", schedules.c.next_run_at_ms)


# The partial-index predicates, as queries must spell them (see ``inline``).
ACTIVE_LEASE = leases.c.state == inline("active")
DISPATCHABLE_ATTEMPT = attempts.c.status.in_([inline("queued"), inline("retry_backoff")])
RUNNING_ATTEMPT = attempts.c.status.in_([inline("leased"), inline("running")])
