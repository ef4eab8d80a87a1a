"""Engines, transactions and driver-error translation for both backends."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from oris.config import Backend, ServerSettings
from oris.domain.errors import InvalidArgument, TransientConflict, Unavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE = "oris_write"
_AFTER_COMMIT = "oris_after_commit"


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the connection's current transaction has committed."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the runtime's data lives, with the URL already chosen for the async driver."""

    backend: Backend
    url: str
    schema: str | None
    display: str

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Target:
        """Resolve the configured backend into an async driver URL."""
        if settings.backend is Backend.SQLITE:
            path = settings.sqlite_db.strip() or "oris_runtime.db"
            return cls(Backend.SQLITE, f"sqlite+aiosqlite:///{path}", None, f"sqlite:{path}")
        dsn = settings.effective_postgres_dsn or ""
        url = make_url(re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", dsn))
        display = url.render_as_string(hide_password=True)
        return cls(
            Backend.POSTGRES,
            url.render_as_string(hide_password=False),
            settings.postgres_schema,
            display,
        )


def create_engine(
    target: Target, *, application_name: str = "oris", pool_size: int = 16
) -> AsyncEngine:
    """Build an async engine; PostgreSQL sessions use the runtime schema as their search path."""
    if target.backend is Backend.POSTGRES:
        return create_async_engine(
            target.url,
            pool_size=pool_size,
            # Overflow connections are closed when returned, so the kept pool is what serves
            # the usual concurrency; a quarter more absorbs bursts.
            max_overflow=max(pool_size // 4, 1),
            pool_pre_ping=False,
            pool_recycle=1800,
            connect_args={
                "server_settings": {
                    "search_path": target.schema or "public",
                    "application_name": application_name,
                    # asyncpg prepares every statement; a generic plan made while a table was
                    # small (a seq scan of a fresh runtime_leases) would be kept as the table
                    # grows. Planning each execution costs little and follows the data.
                    "plan_cache_mode": "force_custom_plan",
                    # Leases and attempts churn: every dispatch and ack leaves a dead entry in
                    # the partial "active" indexes until VACUUM. A plain index scan marks the
                    # dead entries it meets so later scans skip them; a bitmap scan never does,
                    # and re-reads every one of them on each poll (the planner cannot see them
                    # and keeps picking bitmap scans of indexes it believes tiny). The runtime's
                    # statements are point lookups and short ranges, which plain scans serve.
                    "enable_bitmapscan": "off",
                },
                "timeout": 10,
            },
        )
    # No pool on SQLite: a connection per transaction costs well under a millisecond, and it
    # means the server notices at once when the database file goes away or is replaced
    # (a restore), instead of writing on through descriptors to an unlinked file.
    engine = create_async_engine(target.url, poolclass=NullPool)
    wal_set: list[bool] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so a write can start with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not wal_set:
            # WAL is a property of the file; switching needs a lock, so do it once per process
            # rather than on every (unpooled) connection.
            cursor.execute("PRAGMA journal_mode = WAL")
            wal_set.append(True)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers take the lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY instead of waiting.
        write = connection.get_execution_options().get(_WRITE, True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


_CHARACTER_NOT_IN_REPERTOIRE = "22021"
# The database rolled the transaction back so that others can go on: running it again is safe.
_TRANSIENT = {"40P01": "deadlock", "40001": "serialization failure"}
_SQLITE_UNREACHABLE = ("unable to open database", "disk i/o error", "readonly database")


def _sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL error code behind a driver error, if any."""
    original = getattr(error, "orig", None)
    sqlstate = getattr(original, "sqlstate", None) or getattr(
        getattr(original, "__cause__", None), "sqlstate", None
    )
    return sqlstate if isinstance(sqlstate, str) else None


def sqlstate_of(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error, if it carries one."""
    return _sqlstate(error)


def is_connectivity_error(error: BaseException) -> bool:
    """Whether a driver error means the database cannot be reached (as opposed to bad SQL)."""
    if isinstance(error, OSError | ConnectionError | asyncio.TimeoutError):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    message = str(original).lower()
    if any(marker in message for marker in _SQLITE_UNREACHABLE):
        return True
    sqlstate = _sqlstate(error)
    # 08: connection exceptions; 57P: shutdown; 53300: the server's connection slots are full.
    if sqlstate is not None and (
        sqlstate.startswith("08") or sqlstate.startswith("57P") or sqlstate == "53300"
    ):
        return True
    cause = getattr(original, "__cause__", None)
    return isinstance(cause, OSError | ConnectionError) or isinstance(error, InterfaceError)


class Database:
    """The runtime's connection pool; every store call runs inside ``read()`` or ``write()``."""

    def __init__(self, target: Target, engine: AsyncEngine) -> None:
        from oris.store.wakeup import WorkSignal

        self.target = target
        self.engine = engine
        self.backend = target.backend
        self.work = WorkSignal(self)
        # One in-process writer at a time on SQLite: the file has a single write lock anyway,
        # and waiting on an asyncio lock is cheaper than spinning on SQLITE_BUSY.
        self._sqlite_write_lock = asyncio.Lock() if target.backend is Backend.SQLITE else None

    @property
    def is_postgres(self) -> bool:
        """Whether this database is PostgreSQL."""
        return self.backend is Backend.POSTGRES

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block exits without an error."""
        if self._sqlite_write_lock is None:
            async with self._transaction(write=True) as conn:
                yield conn
            return
        async with self._sqlite_write_lock, self._transaction(write=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        async with self._transaction(write=False) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def single(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: a connection on which each statement commits on its own, for a write
        that is one statement. It saves the ``BEGIN`` and ``COMMIT`` round trips (a third of a
        submit's). After-commit callbacks run when the block exits without an error."""
        if not self.is_postgres:
            raise RuntimeError("single-statement writes are for PostgreSQL")
        async with self._connection({"isolation_level": "AUTOCOMMIT"}, begin=False) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self._connection({_WRITE: write}, begin=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _connection(
        self, options: dict[str, Any], *, begin: bool
    ) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as raw:
                conn = await raw.execution_options(**options)
                try:
                    if begin:
                        async with conn.begin():
                            yield conn
                    else:
                        yield conn
                finally:
                    # ``info`` belongs to the pooled connection: callbacks of work that did not
                    # commit must not fire after the next borrower's commit. (An invalidated
                    # connection's ``info`` is cleared when it reconnects; reading it here would
                    # try to reconnect.)
                    broken = conn.invalidated or conn.closed
                    callbacks = [] if broken else conn.info.pop(_AFTER_COMMIT, [])
                for callback in callbacks:
                    callback()
        except (TimeoutError, DBAPIError, OSError, ConnectionError) as error:
            self._raise_translated(error)
            raise

    def _raise_translated(self, error: BaseException) -> None:
        """Raise the API error a driver error stands for; return when it is a server fault."""
        if is_connectivity_error(error):
            raise Unavailable(
                f"database unavailable ({self.target.backend.value}): {type(error).__name__}"
            ) from error
        sqlstate = _sqlstate(error)
        if sqlstate in _TRANSIENT:
            raise TransientConflict(
                f"the database rolled the transaction back ({_TRANSIENT[sqlstate]}); retry",
                {"reason": _TRANSIENT[sqlstate]},
            ) from error
        if sqlstate == _CHARACTER_NOT_IN_REPERTOIRE:
            # A U+0000 in a text parameter that no validation caught (a query filter):
            # PostgreSQL refuses it, and that is the caller's input, not a server fault.
            raise InvalidArgument(
                "text parameters must not contain NUL (U+0000) characters"
            ) from error

    async def dispose(self) -> None:
        """Close every pooled connection (and the work listener)."""
        await self.work.close()
        await self.engine.dispose()


def open_database(settings: ServerSettings, *, application_name: str = "oris-api") -> Database:
    """Create the database handle for the configured backend (no connection is made yet)."""
    target = Target.from_settings(settings)
    engine = create_engine(
        target, application_name=application_name, pool_size=settings.postgres_pool_size
    )
    return Database(target, engine)
