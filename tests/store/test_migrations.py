"""Schema versioning on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from oris.config import ServerSettings
from oris.domain.errors import SchemaVersionError
from oris.services.bootstrap import open_database, prepare_database, upgrade_schema
from oris.store.schema import _alembic_config, code_version, schema_status
from oris.store.tables import metadata, schema_migrations


async def test_empty_database_upgrades_to_head_and_records_each_revision(
    settings: ServerSettings,
) -> None:
    database = open_database(settings)
    try:
        before = await schema_status(database)
        assert before.database_version is None
        after = await upgrade_schema(database)
        assert after.at_head
        async with database.read() as conn:
            rows = (await conn.execute(select(schema_migrations))).mappings().all()
        assert [(r["version"], r["name"]) for r in rows] == [
            (1, "baseline_runtime_tables"),
            (2, "incident_freeze"),
            (3, "worker_registry"),
            (4, "audit_chain_head"),
            (5, "list_filters"),
            (6, "lease_settling"),
            (7, "schedules"),
            (8, "retention"),
        ]
        assert all(r["applied_at_ms"] > 0 for r in rows)
        again = await upgrade_schema(database)
        assert again.database_version == code_version()
    finally:
        await database.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if "alembic_version" not in str(d)]


async def test_migrations_build_exactly_the_declared_schema(settings: ServerSettings) -> None:
    database = open_database(settings)
    try:
        await upgrade_schema(database)
        async with database.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await database.dispose()


async def test_a_newer_database_is_refused_and_nothing_is_written(settings: ServerSettings) -> None:
    database = open_database(settings)
    try:
        await upgrade_schema(database)
        async with database.write() as conn:
            await conn.execute(
                schema_migrations.insert().values(
                    version=99, name="from_the_future", applied_at_ms=1
                )
            )
        for attempt in (prepare_database(settings, database), upgrade_schema(database)):
            with pytest.raises(SchemaVersionError) as raised:
                await attempt
            assert "99" in str(raised.value)
            assert f"supported {code_version()}" in str(raised.value)
        async with database.read() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(schema_migrations))
            ).scalar_one()
        assert count == code_version() + 1
    finally:
        await database.dispose()


async def test_postgres_requires_the_schema_unless_told_otherwise(
    backend: str, make_settings: Any
) -> None:
    if backend != "postgres":
        pytest.skip("ORIS_POSTGRES_REQUIRE_SCHEMA only applies to PostgreSQL")
    strict: ServerSettings = make_settings(postgres_require_schema=True)
    database = open_database(strict)
    try:
        with pytest.raises(SchemaVersionError) as raised:
            await prepare_database(strict, database)
        assert "oris db upgrade" in str(raised.value)
        assert not (await schema_status(database)).schema_exists
    finally:
        await database.dispose()
    lenient: ServerSettings = make_settings(postgres_require_schema=False)
    database = open_database(lenient)
    try:
        assert (await prepare_database(lenient, database)).at_head
    finally:
        await database.dispose()


async def test_the_list_filters_revision_fills_in_the_workflow_and_tenant_of_existing_dead_letters(
    settings: ServerSettings,
) -> None:
    database = open_database(settings)
    try:
        async with database.engine.connect() as conn:
            if database.backend.value == "postgres":
                await conn.execute(
                    text(f'CREATE SCHEMA IF NOT EXISTS "{settings.postgres_schema}"')
                )
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0004"))
            await conn.execute(
                text(
                    "INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, "
                    "retry_base_no, status, kind, workflow, priority, tenant_id, "
                    "available_at_ms, trace_flags, created_at_ms, updated_at_ms) VALUES "
                    "('a-old', 't-old', 1, 1, 0, 'failed', 'run', 'payments', 0, 'acme', "
                    "1, '01', 1, 1)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO runtime_dead_letters (attempt_id, run_id, attempt_no, "
                    "terminal_status, dead_at_ms, replay_status, replay_count) VALUES "
                    "('a-old', 't-old', 1, 'failed', 1, 'pending', 0), "
                    "('a-gone', 't-gone', 1, 'failed', 1, 'pending', 0)"
                )
            )
            await conn.commit()
        assert (await upgrade_schema(database)).at_head
        async with database.read() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT attempt_id, workflow, tenant_id FROM runtime_dead_letters "
                        "ORDER BY attempt_id"
                    )
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            ("a-gone", None, None),
            ("a-old", "payments", "acme"),
        ]
    finally:
        await database.dispose()
