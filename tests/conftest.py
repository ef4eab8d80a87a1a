"""Fixtures: every test that touches a database runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.api.app import create_app
from oris.config import ServerSettings
from oris.observability.metrics import RuntimeMetrics
from oris.services.bootstrap import open_database, upgrade_schema
from oris.services.runtime import Runtime
from tests.support import drop_schema, lifespan_client, server_settings


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each database test runs once per backend."""
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Iterator[ServerSettings]:
    """Settings for a fresh, isolated database."""
    created = server_settings(backend, tmp_path)
    yield created
    drop_schema(created)


@pytest.fixture
def make_settings(backend: str, tmp_path: Path) -> Iterator[Any]:
    """Build settings with overrides (several per test allowed); all cleaned up."""
    made: list[ServerSettings] = []

    def build(**overrides: Any) -> ServerSettings:
        created = server_settings(backend, tmp_path, **overrides)
        made.append(created)
        return created

    yield build
    for created in made:
        drop_schema(created)


@pytest.fixture
async def rt(settings: ServerSettings) -> AsyncIterator[Runtime]:
    """A migrated database wrapped as a runtime, for service-level tests."""
    database = open_database(settings)
    await upgrade_schema(database)
    yield Runtime(db=database, settings=settings, metrics=RuntimeMetrics())
    await database.dispose()


@pytest.fixture
async def api(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API in-process (maintenance loop off; tests drive it explicitly)."""
    app = create_app(settings, run_maintenance=False)
    async for client in lifespan_client(app):
        yield client
