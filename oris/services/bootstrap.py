"""Startup: bring the schema to where this code needs it, or refuse with a clear message."""

from __future__ import annotations

import logging

from oris.config import Backend, ConfigError, ServerSettings
from oris.domain.errors import SchemaVersionError, Unavailable
from oris.store import api_keys as key_store
from oris.store import schema
from oris.store.database import Database, is_connectivity_error, open_database
from oris.store.schema import MigrationLimits, Revision, SchemaStatus, pending_revisions

log = logging.getLogger("oris.bootstrap")

__all__ = [
    "MigrationLimits",
    "Revision",
    "SchemaStatus",
    "check_schema",
    "migration_limits",
    "open_database",
    "pending_revisions",
    "prepare_database",
    "upgrade_schema",
]


def migration_limits(settings: ServerSettings) -> MigrationLimits:
    """The migration timeouts and retries from ``ORIS_MIGRATION_*``."""
    return MigrationLimits(
        lock_timeout_seconds=settings.migration_lock_timeout_seconds,
        statement_timeout_seconds=settings.migration_statement_timeout_seconds,
        lock_retries=settings.migration_lock_retries,
    )


def _unreachable(database: Database, error: BaseException) -> ConfigError:
    return ConfigError(
        f"{database.backend.value} database at {database.target.display} is unreachable: "
        f"{type(error).__name__}: {_safe(error)}"
    )


def _safe(error: BaseException) -> str:
    # Driver messages can embed the DSN; never echo anything that looks like a password.
    text = str(error).splitlines()[0] if str(error) else ""
    return text.split("@")[-1][:200]


async def check_schema(database: Database) -> SchemaStatus:
    """Read the schema version, turning connection failures into a clear ``ConfigError``."""
    try:
        return await schema.schema_status(database)
    except Exception as error:
        if is_connectivity_error(error) or isinstance(error, Unavailable):
            raise _unreachable(database, error) from None
        raise


async def upgrade_schema(
    database: Database, limits: MigrationLimits | None = None, *, target: str = "head"
) -> SchemaStatus:
    """``oris db upgrade``: apply missing revisions; refuse a newer database."""
    status = await check_schema(database)
    if status.newer_than_code:
        raise SchemaVersionError(status.describe(database.backend))
    try:
        return await schema.upgrade(database, limits, target=target)
    except SchemaVersionError:
        raise
    except Exception as error:
        if is_connectivity_error(error):
            raise _unreachable(database, error) from None
        raise


async def prepare_database(settings: ServerSettings, database: Database) -> SchemaStatus:
    """What ``oris serve`` does before accepting traffic.

    SQLite migrates at startup. PostgreSQL requires the schema at head unless
    ``ORIS_POSTGRES_REQUIRE_SCHEMA=false``, in which case it applies forward-only migrations.
    A database newer than the code always refuses.
    """
    status = await check_schema(database)
    if status.newer_than_code:
        raise SchemaVersionError(status.describe(database.backend))
    if status.at_head:
        return status
    if database.backend is Backend.POSTGRES and settings.postgres_require_schema:
        raise SchemaVersionError(
            status.describe(database.backend)
            + " (ORIS_POSTGRES_REQUIRE_SCHEMA=true refuses to start on an old schema)"
        )
    log.info("applying schema migrations at startup", extra={"backend": database.backend.value})
    return await upgrade_schema(database, migration_limits(settings))


def check_bootstrap_credentials(settings: ServerSettings) -> None:
    """A bootstrap secret that is set but blank is a mistake, not "no credential": refuse it
    rather than start with less protection than the operator asked for."""
    for name, value in (
        ("ORIS_API_AUTH_BEARER_TOKEN", settings.api_auth_bearer_token),
        ("ORIS_API_AUTH_API_KEY", settings.api_auth_api_key),
    ):
        if value is not None and not value.get_secret_value().strip():
            raise ConfigError(
                f"{name} is set but blank (empty or only whitespace): set a secret or unset it"
            )
    key_id = settings.api_auth_api_key_id
    if key_id is not None and not key_id.strip():
        raise ConfigError(
            "ORIS_API_AUTH_API_KEY_ID is set but blank (empty or only whitespace): set a key "
            "id or unset it"
        )


async def check_auth_posture(
    settings: ServerSettings, database: Database, static_credentials: bool, *, warn: bool = True
) -> None:
    """Fail closed: without any credential, only a loopback bind (or an explicit opt-out) serves.

    ``warn=False`` refuses the same way but logs nothing (a pre-flight check whose server
    will log the warnings itself, so each appears once)."""
    check_bootstrap_credentials(settings)
    if static_credentials or settings.auth_disabled:
        if warn and settings.auth_disabled and not settings.binds_loopback:
            log.warning(
                "authentication is disabled by ORIS_AUTH_DISABLED on a non-loopback address"
            )
        return
    async with database.read() as conn:
        active = await key_store.count_active(conn)
        ever = active > 0 or await key_store.any_exists(conn)
    if active:
        return
    if settings.binds_loopback:
        if not warn:
            return
        if ever:
            log.warning(
                "every managed key is disabled and no bootstrap credential is set: every /v1 "
                "request is refused (set ORIS_API_AUTH_BEARER_TOKEN to get back in)"
            )
        else:
            log.warning(
                "no credentials configured: every route is open to local callers "
                "(set ORIS_API_AUTH_BEARER_TOKEN or create keys with `oris keys create`)"
            )
        return
    raise ConfigError(
        f"refusing to serve on {settings.server_addr} without credentials: set "
        "ORIS_API_AUTH_BEARER_TOKEN (or ORIS_API_AUTH_API_KEY), create a key with "
        "`oris keys create`, or set ORIS_AUTH_DISABLED=true explicitly"
    )
