"""Waking long-polling workers when work is queued, in this process and across replicas.

In a transaction that makes work dispatchable, ``signal_work`` registers a wake-up for when it
commits; on PostgreSQL it also issues ``NOTIFY``, which the database delivers to every API
replica's listener at commit. ``wait_for_work`` lets a poll sleep until then (or a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from oris.store.database import Database, after_commit

log = logging.getLogger("oris.wakeup")
CHANNEL = "oris_work_available"
_NOTIFY = text("SELECT pg_notify(:channel, '')")
LISTEN_RETRY_SECONDS = 5.0


class WorkSignal:
    """One per process: wakes pollers waiting in this process."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._waiters: set[asyncio.Future[None]] = set()
        self._listener: Any = None
        self._listen_lock = asyncio.Lock()
        self._failed_at = 0.0

    def wake(self) -> None:
        """Wake every waiting poll."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def signal(self, conn: AsyncConnection, *, notified: bool = False) -> None:
        """Inside a transaction: wake pollers here and in other replicas once it commits.
        ``notified``: one of the transaction's statements already sent ``NOTIFY`` on
        :data:`CHANNEL` (PostgreSQL)."""
        if self._database.is_postgres and not notified:
            await conn.execute(_NOTIFY, {"channel": CHANNEL})
        after_commit(conn, self.wake)

    async def arm(self) -> asyncio.Future[None]:
        """Register interest before looking for work, so a commit in between is not missed."""
        if self._database.is_postgres:
            await self._ensure_listener()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        return waiter

    async def wait(self, waiter: asyncio.Future[None], seconds: float) -> None:
        """Sleep until ``waiter`` is woken or ``seconds`` pass."""
        try:
            if seconds > 0:
                await asyncio.wait_for(asyncio.shield(waiter), seconds)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._failed_at < LISTEN_RETRY_SECONDS:
            return
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            import asyncpg

            url = make_url(self._database.target.url)
            try:
                self._listener = await asyncpg.connect(
                    host=url.host,
                    port=url.port or 5432,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                    timeout=5,
                    server_settings={"application_name": "oris-api-listener"},
                )
                await self._listener.add_listener(CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                # Without the listener, polls still wake on this process's own work and on
                # their timeout; nothing is lost.
                log.warning("cannot LISTEN for work notifications: %s", type(error).__name__)
                self._listener = None
                self._failed_at = loop.time()

    def _on_notify(self, *_: Any) -> None:
        self.wake()

    async def close(self) -> None:
        """Stop listening."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()
        self.wake()
