"""incident freeze

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 2
NAME = "incident_freeze"


def upgrade() -> None:
    op.create_table(
        "runtime_incidents",
        sa.Column("incident_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened_by", sa.String(length=128), nullable=True),
        sa.Column("opened_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed_by", sa.String(length=128), nullable=True),
        sa.Column("closed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("incident_id"),
    )
    op.create_index(
        "uq_runtime_incidents_open",
        "runtime_incidents",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
