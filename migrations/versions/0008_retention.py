"""retention: purge by thread, audit archive anchor

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 8
NAME = "retention"


def upgrade() -> None:
    # Purging a job deletes its idempotency keys by thread id; without this index each purge
    # batch would scan the whole table. (A plain CREATE INDEX blocks writes to the table while
    # it builds; the migration's lock_timeout keeps it from queueing behind a long writer.)
    op.create_index(
        "idx_runtime_idempotency_thread", "runtime_idempotency", ["thread_id"], unique=False
    )
    # One row: where the archived part of the audit chain ends, so verification of what
    # remains starts from the last archived row's hash instead of from nothing.
    op.create_table(
        "runtime_audit_anchor",
        sa.Column("anchor_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_audit_id", sa.BigInteger(), nullable=False),
        sa.Column("last_row_hash", sa.String(length=64), nullable=False),
        sa.Column("archived_rows", sa.BigInteger(), nullable=False),
        sa.Column("archived_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("anchor_id"),
    )
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
