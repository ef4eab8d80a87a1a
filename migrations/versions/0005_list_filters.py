"""list filters

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oris.store.schema import record_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 5
NAME = "list_filters"

# Filtered and keyset-paged job listings (``GET /v1/jobs?workflow=...&cursor=...``) and bulk
# operator actions stay on an index at a million jobs. Dead letters carry their attempt's
# workflow and tenant, so the DLQ filters on its own rows instead of joining the attempts.
_INDEXES = {
    "idx_runtime_jobs_workflow_updated": ["workflow", "updated_at_ms DESC", "thread_id"],
    "idx_runtime_jobs_tenant_updated": ["tenant_id", "workflow", "updated_at_ms DESC", "thread_id"],
    "idx_runtime_jobs_created": ["created_at_ms DESC", "thread_id"],
}


_BACKFILL = """
UPDATE runtime_dead_letters SET
    workflow = (SELECT a.workflow FROM runtime_attempts a
                WHERE a.attempt_id = runtime_dead_letters.attempt_id),
    tenant_id = (SELECT a.tenant_id FROM runtime_attempts a
                 WHERE a.attempt_id = runtime_dead_letters.attempt_id)
"""


def upgrade() -> None:
    op.add_column("runtime_dead_letters", sa.Column("workflow", sa.String(128), nullable=True))
    op.add_column("runtime_dead_letters", sa.Column("tenant_id", sa.String(128), nullable=True))
    op.execute(_BACKFILL)
    for name, columns in _INDEXES.items():
        parts = [sa.literal_column(c) if c.endswith(" DESC") else c for c in columns]
        op.create_index(name, "runtime_jobs", parts, unique=False)
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
