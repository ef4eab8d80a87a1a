"""``oris db``: schema versioning commands."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from oris.cli.errors import fail
from oris.cli.serve import load_settings_or_exit
from oris.config import Backend, ConfigError
from oris.domain.errors import SchemaVersionError
from oris.services.bootstrap import SchemaStatus, check_schema, open_database, upgrade_schema

app = typer.Typer(help="Schema versioning: upgrade, current, check.", no_args_is_help=True)

BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        envvar="ORIS_RUNTIME_BACKEND",
        help="sqlite or postgres.",
        show_default="sqlite",
    ),
]


def _run(backend: str | None, upgrade: bool) -> tuple[SchemaStatus, str]:
    settings = load_settings_or_exit(runtime_backend=backend)
    database = open_database(settings, application_name="oris-db")

    async def go() -> SchemaStatus:
        try:
            return await (upgrade_schema(database) if upgrade else check_schema(database))
        finally:
            await database.dispose()

    try:
        return asyncio.run(go()), settings.backend.value
    except (ConfigError, SchemaVersionError) as error:
        fail(str(error))
    except Exception as error:  # a migration that fails must read as a message, not a trace
        fail(f"schema command failed ({type(error).__name__}): {str(error).splitlines()[0][:300]}")


@app.command("upgrade")
def upgrade(backend: BackendOption = None) -> None:
    """Apply every missing migration (forward-only); refuse a database newer than this code."""
    status, name = _run(backend, upgrade=True)
    typer.echo(
        f"{name} runtime schema at version {status.database_version} (head {status.code_version})"
    )


@app.command("current")
def current(backend: BackendOption = None) -> None:
    """Print the database's schema version (0 when empty)."""
    status, _ = _run(backend, upgrade=False)
    typer.echo(str(status.database_version or 0))


@app.command("check")
def check(backend: BackendOption = None) -> None:
    """Exit 0 when the schema is at this code's head; non-zero with a message otherwise."""
    status, name = _run(backend, upgrade=False)
    if not status.at_head:
        fail(status.describe(Backend(name)))
    typer.echo(f"{name} runtime schema version {status.database_version} is current")
