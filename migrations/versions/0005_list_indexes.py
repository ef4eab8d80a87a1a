"""list indexes

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
NAME = "list_indexes"

# Filtered and keyset-paged job listings (``GET /v1/jobs?workflow=...&cursor=...``) and bulk
# operator actions stay on an index at a million jobs.
_INDEXES = {
    "idx_runtime_jobs_workflow_updated": ["workflow", "updated_at_ms DESC", "thread_id"],
    "idx_runtime_jobs_tenant_updated": ["tenant_id", "updated_at_ms DESC", "thread_id"],
    "idx_runtime_jobs_created": ["created_at_ms DESC", "thread_id"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        parts = [sa.literal_column(c) if c.endswith(" DESC") else c for c in columns]
        op.create_index(name, "runtime_jobs", parts, unique=False)
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
