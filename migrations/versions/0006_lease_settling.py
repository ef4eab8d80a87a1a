"""lease settling mark

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 6
NAME = "lease_settling"


def upgrade() -> None:
    # When the lease's holder first said, on a heartbeat, that the attempt's outcome is decided
    # and only its ack remains; an active lease marked long ago is an ack that never came.
    op.add_column("runtime_leases", sa.Column("settling_since_ms", sa.BigInteger(), nullable=True))
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
