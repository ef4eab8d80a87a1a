"""``oris db``: schema versioning commands."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from oris.cli.errors import fail
from oris.cli.output import print_json
from oris.cli.serve import load_settings_or_exit

if TYPE_CHECKING:
    # Imported for real inside the commands: only they need the database stack.
    from oris.services.bootstrap import SchemaStatus

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
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the schema status as JSON instead of a line.")
]


def _run(backend: str | None, upgrade: bool) -> tuple[SchemaStatus, str]:
    from oris.config import ConfigError
    from oris.domain.errors import SchemaVersionError
    from oris.services.bootstrap import (
        check_schema,
        migration_limits,
        open_database,
        upgrade_schema,
    )

    settings = load_settings_or_exit(runtime_backend=backend)
    database = open_database(settings, application_name="oris-db")

    async def go() -> SchemaStatus:
        try:
            if upgrade:
                return await upgrade_schema(database, migration_limits(settings))
            return await check_schema(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(go()), settings.backend.value
    except (ConfigError, SchemaVersionError) as error:
        fail(str(error))
    except Exception as error:  # a migration that fails must read as a message, not a trace
        fail(f"schema command failed ({type(error).__name__}): {str(error).splitlines()[0][:300]}")


def _status_json(status: SchemaStatus, backend: str) -> dict[str, object]:
    return {
        "backend": backend,
        "database_version": status.database_version or 0,
        "code_version": status.code_version,
        "schema_exists": status.schema_exists,
        "at_head": status.at_head,
    }


@app.command("upgrade")
def upgrade(
    backend: BackendOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the pending revisions; change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply every missing migration (forward-only); refuse a database newer than this code.

    On PostgreSQL each migration waits at most ORIS_MIGRATION_LOCK_TIMEOUT_SECONDS for a lock
    (retried ORIS_MIGRATION_LOCK_RETRIES times, then refused with the blocking sessions) and
    runs each statement at most ORIS_MIGRATION_STATEMENT_TIMEOUT_SECONDS."""
    if dry_run:
        _dry_run(backend, as_json)
        return
    status, name = _run(backend, upgrade=True)
    if as_json:
        print_json(_status_json(status, name))
        return
    typer.echo(
        f"{name} runtime schema at version {status.database_version} (head {status.code_version})"
    )


def _dry_run(backend: str | None, as_json: bool) -> None:
    from oris.config import Backend
    from oris.services.bootstrap import pending_revisions

    status, name = _run(backend, upgrade=False)
    if status.newer_than_code:
        fail(status.describe(Backend(name)))
    pending = pending_revisions(status)
    if as_json:
        print_json(
            {
                **_status_json(status, name),
                "pending": [
                    {"revision": r.alembic_id, "version": r.version, "name": r.name}
                    for r in pending
                ],
            }
        )
        return
    if not pending:
        typer.echo(f"{name} runtime schema version {status.database_version} is current")
        return
    typer.echo(
        f"{name} runtime schema at version {status.database_version or 0}; "
        f"`oris db upgrade` would apply {len(pending)} revision(s):"
    )
    for revision in pending:
        typer.echo(f"  {revision.alembic_id}  version {revision.version}  {revision.name}")


@app.command("current")
def current(backend: BackendOption = None, as_json: JsonOption = False) -> None:
    """Print the database's schema version (0 when empty)."""
    status, name = _run(backend, upgrade=False)
    if as_json:
        print_json(_status_json(status, name))
        return
    typer.echo(str(status.database_version or 0))


@app.command("check")
def check(backend: BackendOption = None, as_json: JsonOption = False) -> None:
    """Exit 0 when the schema is at this code's head; non-zero with a message otherwise."""
    from oris.config import Backend

    status, name = _run(backend, upgrade=False)
    if as_json:
        print_json(
            {
                **_status_json(status, name),
                "problem": None if status.at_head else status.describe(Backend(name)),
            }
        )
    if not status.at_head:
        fail(status.describe(Backend(name)))
    if not as_json:
        typer.echo(f"{name} runtime schema version {status.database_version} is current")
