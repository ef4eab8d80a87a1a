"""Schema versioning: Alembic revisions plus upstream's ``runtime_schema_migrations`` table.

Each revision records ``(version, name, applied_at_ms)``. The runtime version of the code is
the number of revisions it ships; a database with a higher recorded version is refused.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection

from oris.config import Backend
from oris.domain.clock import now_ms
from oris.domain.errors import SchemaVersionError
from oris.store.database import Database
from oris.store.tables import schema_migrations

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def migrations_directory() -> Path:
    """Where the Alembic revisions live: inside the wheel, or at the top of a checkout."""
    for candidate in (_PACKAGE_ROOT / "_migrations", _PACKAGE_ROOT.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaVersionError("the migrations directory is missing from this installation")


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.attributes["connection"] = connection
    return config


@dataclass(frozen=True, slots=True)
class Revision:
    """One shipped migration."""

    version: int
    name: str
    alembic_id: str


@functools.cache
def shipped_revisions() -> list[Revision]:
    """Every revision this code ships, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config())
    revisions = []
    for item in script.walk_revisions():
        module = item.module
        revisions.append(
            Revision(int(module.RUNTIME_VERSION), str(module.NAME), str(item.revision))
        )
    return sorted(revisions, key=lambda r: r.version)  # read once per process


def code_version() -> int:
    """The schema version this code supports."""
    return max((r.version for r in shipped_revisions()), default=0)


def record_version(version: int, name: str) -> None:
    """Called at the end of every revision: records it in ``runtime_schema_migrations``."""
    op.get_bind().execute(
        schema_migrations.insert().values(version=version, name=name, applied_at_ms=now_ms())
    )


def _database_version(connection: Connection) -> int | None:
    """Recorded schema version, or None when the schema has no runtime tables at all."""
    if not inspect(connection).has_table(schema_migrations.name):
        return None
    value = connection.execute(select(func.max(schema_migrations.c.version))).scalar()
    return int(value) if value is not None else 0


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database stands relative to this code."""

    database_version: int | None
    code_version: int
    schema_exists: bool

    @property
    def at_head(self) -> bool:
        """The database is exactly at the code's version."""
        return self.database_version == self.code_version

    @property
    def newer_than_code(self) -> bool:
        """The database was migrated by newer code."""
        return (self.database_version or 0) > self.code_version

    def describe(self, backend: Backend) -> str:
        """A one-line operator message."""
        if self.newer_than_code:
            return (
                f"{backend.value} runtime schema version {self.database_version} is newer than "
                f"supported {self.code_version}: deploy code that supports schema version "
                f"{self.database_version} (or restore the pre-upgrade backup)"
            )
        if not self.schema_exists:
            return f"{backend.value} runtime schema does not exist; run `oris db upgrade`"
        if self.database_version is None or self.database_version < self.code_version:
            return (
                f"{backend.value} runtime schema version {self.database_version or 0} is older "
                f"than required {self.code_version}; run `oris db upgrade`"
            )
        return f"{backend.value} runtime schema version {self.database_version} is current"


async def _schema_exists(database: Database) -> bool:
    if database.backend is not Backend.POSTGRES:
        return True
    async with database.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT 1 FROM pg_namespace WHERE nspname = :name"),
            {"name": database.target.schema},
        )
        return found.first() is not None


async def schema_status(database: Database) -> SchemaStatus:
    """Read the database's recorded version without changing anything."""
    exists = await _schema_exists(database)
    version: int | None = None
    if exists:
        async with database.engine.connect() as conn:
            version = await conn.run_sync(_database_version)
    return SchemaStatus(version, code_version(), exists)


_SAFE_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


async def upgrade(database: Database) -> SchemaStatus:
    """Apply every missing revision in one transaction; refuse a database newer than the code."""
    status = await schema_status(database)
    if status.newer_than_code:
        raise SchemaVersionError(status.describe(database.backend))
    if status.at_head:
        return status
    async with database.engine.connect() as conn:
        if database.backend is Backend.POSTGRES:
            schema = database.target.schema or "public"
            if not _SAFE_SCHEMA.match(schema):
                raise SchemaVersionError(f"unsafe schema name {schema!r}")
            # Serialise concurrent upgraders (several replicas starting at once).
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(_run_alembic_upgrade)
        await conn.commit()
    return await schema_status(database)


def _run_alembic_upgrade(connection: Connection) -> None:
    # Checked again under the lock: another process may have migrated meanwhile.
    version = _database_version(connection)
    if version is not None and version > code_version():
        raise SchemaVersionError(
            f"runtime schema version {version} is newer than supported {code_version()}"
        )
    command.upgrade(_alembic_config(connection), "head")
