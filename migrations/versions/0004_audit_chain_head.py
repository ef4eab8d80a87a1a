"""audit chain head function

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from oris.store.schema import record_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RUNTIME_VERSION = 4
NAME = "audit_chain_head"

# PostgreSQL only. Takes the audit chain's transaction lock, then reads the newest row's hash.
# The function is VOLATILE, so its SELECT runs on a snapshot taken after the lock is granted and
# sees the row of the writer that held the lock before; that lets one INSERT ... SELECT append
# a linked row, where a plain statement's snapshot would predate the lock. SQLite has one
# writer at a time and needs nothing.
_CHAIN_HEAD = """
CREATE OR REPLACE FUNCTION oris_audit_chain_head(lock_key bigint) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN (SELECT row_hash FROM runtime_audit_logs ORDER BY audit_id DESC LIMIT 1);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CHAIN_HEAD)
    record_version(RUNTIME_VERSION, NAME)


def downgrade() -> None:
    raise NotImplementedError("runtime schema migrations are forward-only")
