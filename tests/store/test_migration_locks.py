"""Migrations fail fast on a lock instead of stalling the queue (PostgreSQL), and the dry run
lists what an upgrade would apply (both backends)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from oris.cli.main import app
from oris.config import ServerSettings
from oris.domain.errors import MigrationLockTimeout
from oris.observability.metrics import RuntimeMetrics
from oris.services import jobs, scheduler
from oris.services.bootstrap import (
    MigrationLimits,
    open_database,
    pending_revisions,
    upgrade_schema,
)
from oris.services.context import RequestContext
from oris.services.runtime import Runtime
from oris.store.schema import Revision, schema_status, shipped_revisions
from tests.support import server_env


def retention_revision() -> tuple[Revision, str]:
    """The revision that indexes runtime_idempotency, and the id of the one before it (the
    numbers may change when revisions from other work land before it)."""
    revisions = shipped_revisions()
    mine = next(r for r in revisions if r.name == "retention")
    previous = next(r for r in revisions if r.version == mine.version - 1)
    return mine, previous.alembic_id


async def test_upgrade_fails_fast_naming_the_blocker_while_polls_keep_working(
    backend: str, settings: ServerSettings
) -> None:
    if backend != "postgres":
        pytest.skip("lock_timeout and pg_blocking_pids are PostgreSQL's; SQLite has one writer")
    mine, previous = retention_revision()
    database = open_database(settings)
    holder = open_database(settings, application_name="oris-test-lock-holder")
    try:
        await upgrade_schema(database, target=previous)
        assert (await schema_status(database)).database_version == mine.version - 1
        rt = Runtime(db=database, settings=settings, metrics=RuntimeMetrics())
        ctx = RequestContext.internal("lock-test")
        for index in range(40):
            await jobs.run(database, ctx, jobs.RunCommand(thread_id=f"q-{index}", input=None))

        # A writer that keeps its transaction open on a table the pending revision indexes
        # (CREATE INDEX needs a SHARE lock, which conflicts with the writer's ROW EXCLUSIVE).
        async with holder.engine.connect() as blocking:
            await blocking.execute(
                text(
                    "INSERT INTO runtime_idempotency (idempotency_key, operation, thread_id, "
                    "payload_hash, response_json, created_at_ms) "
                    "VALUES ('held', 'run', 'q-0', 'h', 'null', 1)"
                )
            )
            holder_pid = (await blocking.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            limits = MigrationLimits(
                lock_timeout_seconds=0.3, lock_retries=2, retry_delay_seconds=0.2
            )
            upgrading = asyncio.create_task(upgrade_schema(database, limits))
            dispatched_during_upgrade = 0
            while not upgrading.done():
                answer = await scheduler.poll(
                    rt, scheduler.PollCommand(worker_id="w-during", limit=1)
                )
                if answer["decision"] == "dispatched" and not upgrading.done():
                    dispatched_during_upgrade += 1
                await asyncio.sleep(0.02)
            with pytest.raises(MigrationLockTimeout) as raised:
                await upgrading
            await blocking.rollback()
        message = str(raised.value)
        assert "gave up waiting for a lock after 0.3s, 3 times" in message
        assert f"pid {holder_pid}" in message
        assert "oris-test-lock-holder" in message
        assert "RowExclusiveLock on runtime_idempotency" in message
        assert "nothing was changed" in message
        assert dispatched_during_upgrade > 0, "polls stalled behind the waiting migration"
        assert (await schema_status(database)).database_version == mine.version - 1

        # Once the writer is gone the same upgrade goes through.
        assert (await upgrade_schema(database, limits)).at_head
    finally:
        await holder.dispose()
        await database.dispose()


async def _migrate(settings: ServerSettings, target: str) -> list[Revision]:
    database = open_database(settings)
    try:
        await upgrade_schema(database, target=target)
        return pending_revisions(await schema_status(database))
    finally:
        await database.dispose()


def test_dry_run_lists_the_pending_revisions_and_changes_nothing(
    settings: ServerSettings,
) -> None:
    mine, previous = retention_revision()
    pending = asyncio.run(_migrate(settings, previous))
    assert pending[0] == mine
    env: dict[str, Any] = server_env(settings)
    result = CliRunner().invoke(app, ["db", "upgrade", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert f"at version {mine.version - 1}" in result.output
    assert f"would apply {len(pending)} revision(s)" in result.output
    assert all(f"{r.alembic_id}  version {r.version}  {r.name}" in result.output for r in pending)
    assert asyncio.run(_migrate(settings, previous)) == pending, "the dry run changed nothing"
    assert asyncio.run(_migrate(settings, "head")) == []
    current = CliRunner().invoke(app, ["db", "upgrade", "--dry-run"], env=env)
    assert current.exit_code == 0 and "is current" in current.output
