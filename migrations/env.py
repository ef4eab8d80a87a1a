"""Alembic environment: always driven by ``oris.store.schema``, which hands in a connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from oris.store.tables import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `oris db upgrade`, not the alembic command line")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
