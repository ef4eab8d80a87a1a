"""schedules and delayed start

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 7
NAME = "schedules"


def upgrade() -> None:
    # When a delayed job or a sleeping workflow is due, and the schedule that queued a job.
    op.add_column("runtime_jobs", sa.Column("run_at_ms", sa.BigInteger(), nullable=True))
    op.add_column("runtime_jobs", sa.Column("schedule_id", sa.String(length=128), nullable=True))
    op.create_index(
        "idx_runtime_jobs_scheduled_run_at",
        "runtime_jobs",
        ["run_at_ms"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
        sqlite_where=sa.text("status = 'scheduled'"),
    )
    op.create_index(
        "idx_runtime_jobs_schedule",
        "runtime_jobs",
        ["schedule_id", "created_at_ms"],
        unique=False,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
        sqlite_where=sa.text("schedule_id IS NOT NULL"),
    )
    op.create_table(
        "runtime_schedules",
        sa.Column("schedule_id", sa.String(length=128), nullable=False),
        sa.Column("workflow", sa.String(length=128), nullable=False),
        sa.Column("input_json", sa.Text(), nullable=False),
        sa.Column("cron", sa.String(length=256), nullable=True),
        sa.Column("every_seconds", sa.BigInteger(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("retry_policy_json", sa.Text(), nullable=True),
        sa.Column("overlap", sa.String(length=16), nullable=False),
        sa.Column("catch_up", sa.String(length=16), nullable=False),
        sa.Column("definition_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_run_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_run_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_thread_id", sa.String(length=128), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id"),
    )
    op.create_index(
        "idx_runtime_schedules_next_run", "runtime_schedules", ["next_run_at_ms"], unique=False
    )
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
