"""Schema versioning: Alembic revisions plus upstream's ``runtime_schema_migrations`` table.

Each revision records ``(version, name, applied_at_ms)``. The runtime version of the code is
the number of revisions it ships; a database with a higher recorded version is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from oris.config import Backend
from oris.domain.clock import now_ms
from oris.domain.errors import MigrationLockTimeout, SchemaVersionError
from oris.store.database import Database, sqlstate_of
from oris.store.tables import schema_migrations

log = logging.getLogger("oris.migrations")
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
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"


@dataclass(frozen=True, slots=True)
class MigrationLimits:
    """How long a PostgreSQL migration may wait for a lock and run one statement, and how
    often ``upgrade`` tries again after a lock timeout. A migration that waits for a lock
    holds up every session that queues behind it (polls, acks, submits); giving up after a few
    seconds bounds that stall."""

    lock_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 600.0  # 0: no limit
    lock_retries: int = 3
    retry_delay_seconds: float = 1.0


def pending_revisions(status: SchemaStatus) -> list[Revision]:
    """The shipped revisions a database at ``status`` has not applied, oldest first."""
    applied = status.database_version or 0
    return [revision for revision in shipped_revisions() if revision.version > applied]


async def upgrade(
    database: Database, limits: MigrationLimits | None = None, *, target: str = "head"
) -> SchemaStatus:
    """Apply every missing revision (up to ``target``, an Alembic revision id) in one
    transaction; refuse a database newer than the code. On PostgreSQL each try runs under
    ``lock_timeout`` and ``statement_timeout``; a lock timeout is retried
    ``limits.lock_retries`` times, then refused with the sessions that held the lock."""
    limits = limits or MigrationLimits()
    status = await schema_status(database)
    if status.newer_than_code:
        raise SchemaVersionError(status.describe(database.backend))
    if status.at_head:
        return status
    if database.backend is not Backend.POSTGRES:
        async with database.engine.connect() as conn:
            await conn.run_sync(_run_alembic_upgrade, target)
            await conn.commit()
        return await schema_status(database)
    blockers: list[dict[str, Any]] = []
    for attempt in range(limits.lock_retries + 1):
        try:
            await _upgrade_postgres(database, limits, target, blockers)
            break
        except DBAPIError as error:
            state = sqlstate_of(error)
            if state == _QUERY_CANCELED:
                raise SchemaVersionError(
                    f"a migration statement ran longer than ORIS_MIGRATION_STATEMENT_TIMEOUT_SECONDS"
                    f"={limits.statement_timeout_seconds:g}; nothing was changed"
                ) from None
            if state != _LOCK_NOT_AVAILABLE:
                raise
            if attempt == limits.lock_retries:
                raise MigrationLockTimeout(
                    _lock_timeout_message(status, limits, attempt + 1, blockers)
                ) from None
            log.warning(
                "migration gave up waiting for a lock; retrying",
                extra={"attempt": attempt + 1, "blockers": [b["pid"] for b in blockers]},
            )
            await asyncio.sleep(limits.retry_delay_seconds * (attempt + 1))
    return await schema_status(database)


async def _upgrade_postgres(
    database: Database, limits: MigrationLimits, target: str, blockers: list[dict[str, Any]]
) -> None:
    schema = database.target.schema or "public"
    if not _SAFE_SCHEMA.match(schema):
        raise SchemaVersionError(f"unsafe schema name {schema!r}")
    async with database.engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # Serialise concurrent upgraders (several replicas starting at once); the timeouts
        # apply from here on, so a second upgrader waits for the first instead of failing.
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
        await conn.execute(
            text("SELECT set_config('lock_timeout', :v, true)"),
            {"v": f"{int(limits.lock_timeout_seconds * 1000)}ms"},
        )
        await conn.execute(
            text("SELECT set_config('statement_timeout', :v, true)"),
            {"v": f"{int(limits.statement_timeout_seconds * 1000)}ms"},
        )
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        watcher = asyncio.create_task(
            _watch_blockers(database, int(pid), limits, blockers), name="oris-migration-locks"
        )
        try:
            await conn.run_sync(_run_alembic_upgrade, target)
            await conn.commit()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


# Sessions that block ``pid`` right now, with what they hold on the relations it waits for.
_BLOCKERS = text(
    """
    WITH wanted AS (
        SELECT locktype, relation, mode FROM pg_locks WHERE pid = :pid AND NOT granted
    )
    SELECT a.pid, a.usename, a.application_name, a.state,
           host(a.client_addr) AS client_addr,
           COALESCE(EXTRACT(EPOCH FROM now() - a.xact_start), 0) AS transaction_seconds,
           left(a.query, 200) AS query,
           (SELECT string_agg(DISTINCT l.mode || COALESCE(' on ' || l.relation::regclass::text, ''), ', ')
              FROM pg_locks l JOIN wanted w
                ON l.locktype = w.locktype AND l.relation IS NOT DISTINCT FROM w.relation
             WHERE l.pid = a.pid AND l.granted) AS holds,
           (SELECT string_agg(w.mode || COALESCE(' on ' || w.relation::regclass::text, ''), ', ')
              FROM wanted w) AS wanted
      FROM pg_stat_activity a
     WHERE a.pid = ANY(pg_blocking_pids(:pid))
     ORDER BY a.pid
    """
)


async def _watch_blockers(
    database: Database, pid: int, limits: MigrationLimits, found: list[dict[str, Any]]
) -> None:
    """While the migration runs, note who blocks it: once its statement is cancelled by the
    lock timeout the wait is over, and so is the evidence."""
    interval = min(max(limits.lock_timeout_seconds / 5, 0.05), 0.5)
    try:
        async with database.engine.connect() as conn:
            while True:
                rows = (await conn.execute(_BLOCKERS, {"pid": pid})).mappings().all()
                await conn.rollback()
                if rows:
                    found[:] = [dict(row) for row in rows]
                await asyncio.sleep(interval)
    except (DBAPIError, OSError) as error:
        # Only evidence for the message: the migration's own outcome must not depend on it.
        log.warning("could not watch the migration's lock waits: %s", type(error).__name__)


def _lock_timeout_message(
    status: SchemaStatus, limits: MigrationLimits, tries: int, blockers: list[dict[str, Any]]
) -> str:
    pending = ", ".join(f"{r.alembic_id} {r.name}" for r in pending_revisions(status))
    head = (
        f"migration ({pending}) gave up waiting for a lock after "
        f"{limits.lock_timeout_seconds:g}s, {tries} times; nothing was changed"
    )
    if not blockers:
        return head + "; no blocking session was seen (look at pg_locks for ungranted locks)"
    sessions = "; ".join(
        f"pid {b['pid']} (user {b['usename']}, application {b['application_name']!r}, "
        f"client {b['client_addr'] or 'local'}, state {b['state']!r}, transaction open "
        f"{float(b['transaction_seconds']):.0f}s, holds {b['holds'] or 'a conflicting lock'}, "
        f"last query {b['query']!r})"
        for b in blockers
    )
    wanted = blockers[0].get("wanted")
    return (
        f"{head}. The migration wanted {wanted or 'a lock'}; blocking sessions: {sessions}. "
        "Let them finish or end them (SELECT pg_terminate_backend(pid)), then run "
        "`oris db upgrade` again"
    )


def _run_alembic_upgrade(connection: Connection, target: str = "head") -> None:
    # Checked again under the lock: another process may have migrated meanwhile.
    version = _database_version(connection)
    if version is not None and version > code_version():
        raise SchemaVersionError(
            f"runtime schema version {version} is newer than supported {code_version()}"
        )
    command.upgrade(_alembic_config(connection), target)
