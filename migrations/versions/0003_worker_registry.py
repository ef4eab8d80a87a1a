"""worker registry

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 3
NAME = "worker_registry"


def upgrade() -> None:
    op.create_table(
        "runtime_workers",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("first_seen_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_decision", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    op.create_index(
        "idx_runtime_workers_last_seen",
        "runtime_workers",
        [sa.literal_column("last_seen_at_ms DESC")],
        unique=False,
    )
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
