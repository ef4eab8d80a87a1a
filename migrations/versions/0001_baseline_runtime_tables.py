"""baseline runtime tables

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:31:11.030449
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RUNTIME_VERSION = 1
NAME = "baseline_runtime_tables"


def upgrade() -> None:
    op.create_table(
        "runtime_api_keys",
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "role", sa.String(length=16), server_default=sa.text("'operator'"), nullable=False
        ),
        sa.Column("worker_id_prefix", sa.String(length=128), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("runtime_api_keys", schema=None) as batch_op:
        batch_op.create_index("idx_runtime_api_keys_status", ["status"], unique=False)

    op.create_table(
        "runtime_attempt_retry_history",
        sa.Column(
            "retry_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("backoff_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("scheduled_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("retry_id"),
    )
    with op.batch_alter_table("runtime_attempt_retry_history", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_retry_history_attempt", ["attempt_id", "retry_id"], unique=False
        )

    op.create_table(
        "runtime_attempts",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("run_no", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("retry_base_no", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("available_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("retry_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("lease_expired_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("execution_timeout_ms", sa.BigInteger(), nullable=True),
        sa.Column("timeout_terminal_status", sa.String(length=32), nullable=True),
        sa.Column("retry_strategy", sa.String(length=32), nullable=True),
        sa.Column("retry_backoff_ms", sa.BigInteger(), nullable=True),
        sa.Column("retry_max_backoff_ms", sa.BigInteger(), nullable=True),
        sa.Column("retry_multiplier", sa.Float(), nullable=True),
        sa.Column("retry_max_retries", sa.Integer(), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("trace_parent_span_id", sa.String(length=16), nullable=True),
        sa.Column("trace_span_id", sa.String(length=16), nullable=True),
        sa.Column(
            "trace_flags", sa.String(length=2), server_default=sa.text("'01'"), nullable=False
        ),
        sa.Column("start_checkpoint_id", sa.String(length=256), nullable=True),
        sa.Column("resume_value_json", sa.Text(), nullable=True),
        sa.Column("output_json", sa.Text(), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("attempt_id"),
    )
    with op.batch_alter_table("runtime_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_attempts_dispatch",
            [sa.literal_column("priority DESC"), "available_at_ms", "seq"],
            unique=False,
            postgresql_where=sa.text("status IN ('queued', 'retry_backoff')"),
            sqlite_where=sa.text("status IN ('queued', 'retry_backoff')"),
        )
        batch_op.create_index("idx_runtime_attempts_run", ["run_id", "seq"], unique=False)
        batch_op.create_index("idx_runtime_attempts_status", ["status"], unique=False)
        batch_op.create_index(
            "idx_runtime_attempts_timeout",
            ["started_at_ms"],
            unique=False,
            postgresql_where=sa.text(
                "execution_timeout_ms IS NOT NULL AND status IN ('leased', 'running')"
            ),
            sqlite_where=sa.text(
                "execution_timeout_ms IS NOT NULL AND status IN ('leased', 'running')"
            ),
        )
        batch_op.create_index("idx_runtime_attempts_trace_id", ["trace_id"], unique=False)

    op.create_table(
        "runtime_audit_logs",
        sa.Column(
            "audit_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("actor_type", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=256), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("source_addr", sa.String(length=64), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("row_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("audit_id"),
    )
    with op.batch_alter_table("runtime_audit_logs", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_audit_logs_action",
            ["action", sa.literal_column("created_at_ms DESC")],
            unique=False,
        )
        batch_op.create_index(
            "idx_runtime_audit_logs_created",
            [sa.literal_column("created_at_ms DESC")],
            unique=False,
        )
        batch_op.create_index("idx_runtime_audit_logs_request", ["request_id"], unique=False)

    op.create_table(
        "runtime_checkpoints",
        sa.Column("checkpoint_id", sa.String(length=256), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=256), nullable=True),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("checkpoint_id"),
        sa.UniqueConstraint("thread_id", "seq", name="uq_runtime_checkpoints_thread_seq"),
    )
    op.create_table(
        "runtime_dead_letters",
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("terminal_status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("dead_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("replay_status", sa.String(length=32), nullable=False),
        sa.Column("replay_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_replayed_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("attempt_id"),
    )
    with op.batch_alter_table("runtime_dead_letters", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_dead_letters_dead_at", [sa.literal_column("dead_at_ms DESC")], unique=False
        )
        batch_op.create_index(
            "idx_runtime_dead_letters_status_dead_at",
            ["replay_status", sa.literal_column("dead_at_ms DESC")],
            unique=False,
        )

    op.create_table(
        "runtime_idempotency",
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("response_json", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    op.create_table(
        "runtime_interrupts",
        sa.Column("interrupt_id", sa.String(length=256), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("step", sa.String(length=256), nullable=True),
        sa.Column("value_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("resume_payload_hash", sa.String(length=64), nullable=True),
        sa.Column("resume_response_json", sa.Text(), nullable=True),
        sa.Column("resumed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("interrupt_id"),
    )
    with op.batch_alter_table("runtime_interrupts", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_interrupts_status_created", ["status", "created_at_ms"], unique=False
        )
        batch_op.create_index(
            "idx_runtime_interrupts_thread", ["thread_id", "created_at_ms"], unique=False
        )

    op.create_table(
        "runtime_jobs",
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=128), nullable=False),
        sa.Column("input_json", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("timeout_ms", sa.BigInteger(), nullable=True),
        sa.Column("timeout_status", sa.String(length=32), nullable=True),
        sa.Column("retry_policy_json", sa.Text(), nullable=True),
        sa.Column("run_no", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("current_attempt_id", sa.String(length=256), nullable=True),
        sa.Column("output_json", sa.Text(), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id"),
    )
    with op.batch_alter_table("runtime_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_jobs_status_updated",
            ["status", sa.literal_column("updated_at_ms DESC")],
            unique=False,
        )
        batch_op.create_index(
            "idx_runtime_jobs_updated",
            [sa.literal_column("updated_at_ms DESC"), "thread_id"],
            unique=False,
        )

    op.create_table(
        "runtime_leases",
        sa.Column("lease_id", sa.String(length=256), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("acquired_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("ack_hash", sa.String(length=64), nullable=True),
        sa.Column("ack_response_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("lease_id"),
    )
    with op.batch_alter_table("runtime_leases", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_leases_active_expiry",
            ["lease_expires_at_ms"],
            unique=False,
            postgresql_where=sa.text("state = 'active'"),
            sqlite_where=sa.text("state = 'active'"),
        )
        batch_op.create_index(
            "idx_runtime_leases_active_tenant",
            ["tenant_id"],
            unique=False,
            postgresql_where=sa.text("state = 'active'"),
            sqlite_where=sa.text("state = 'active'"),
        )
        batch_op.create_index(
            "idx_runtime_leases_active_worker",
            ["worker_id"],
            unique=False,
            postgresql_where=sa.text("state = 'active'"),
            sqlite_where=sa.text("state = 'active'"),
        )
        batch_op.create_index("idx_runtime_leases_attempt", ["attempt_id"], unique=False)
        batch_op.create_index(
            "uq_runtime_leases_active_attempt",
            ["attempt_id"],
            unique=True,
            postgresql_where=sa.text("state = 'active'"),
            sqlite_where=sa.text("state = 'active'"),
        )

    op.create_table(
        "runtime_replay_effects",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("replay_target", sa.String(length=256), nullable=False),
        sa.Column("effect_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("execution_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=True),
        sa.Column("claim_expires_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("completed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("response_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("fingerprint"),
    )
    with op.batch_alter_table("runtime_replay_effects", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_replay_effects_thread_created",
            ["thread_id", "created_at_ms"],
            unique=False,
        )

    op.create_table(
        "runtime_schema_migrations",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("applied_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "runtime_step_reports",
        sa.Column(
            "report_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=False),
        sa.Column("action_id", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("dedupe_token", sa.String(length=256), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_id", sa.String(length=256), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("report_id"),
        sa.UniqueConstraint("attempt_id", "dedupe_token", name="uq_runtime_step_reports_dedupe"),
    )
    op.create_table(
        "runtime_timeline_events",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_id", sa.String(length=256), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=256), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("runtime_timeline_events", schema=None) as batch_op:
        batch_op.create_index(
            "idx_runtime_timeline_thread", ["thread_id", "event_id"], unique=False
        )

    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
