"""``oris serve``: the API server (and optionally local workers beside it)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from oris.cli.errors import fail

if TYPE_CHECKING:
    from oris.config import ServerSettings

# The server and database stack (FastAPI, uvicorn, SQLAlchemy, drivers) and the settings model
# are imported inside the functions that run them, so every other command starts without them.

log = logging.getLogger("oris.serve")


def load_settings_or_exit(**overrides: object) -> ServerSettings:
    """Settings from the environment plus CLI overrides, or a clean exit 2 on bad config."""
    from oris.config import ConfigError, load_server_settings

    try:
        return load_server_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as error:
        fail(str(error), 2)


async def _preflight(settings: ServerSettings) -> None:
    from oris.services.bootstrap import check_auth_posture, open_database, prepare_database

    database = open_database(settings, application_name="oris-serve-preflight")
    try:
        status = await prepare_database(settings, database)
        static = any(
            value is not None and value.get_secret_value().strip()
            for value in (settings.api_auth_bearer_token, settings.api_auth_api_key)
        )
        # The server's lifespan repeats the check and logs its warnings; here it only refuses.
        await check_auth_posture(settings, database, static, warn=False)
        log.info(
            "database ready",
            extra={
                "backend": settings.backend.value,
                "database": database.target.display,
                "schema_version": status.code_version,
            },
        )
    finally:
        await database.dispose()


def serve(
    addr: Annotated[
        str | None,
        typer.Option(
            "--addr",
            envvar="ORIS_SERVER_ADDR",
            help="HOST:PORT to bind.",
            show_default="127.0.0.1:8080",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            envvar="ORIS_RUNTIME_BACKEND",
            help="sqlite or postgres.",
            show_default="sqlite",
        ),
    ] = None,
    sqlite_db: Annotated[
        str | None,
        typer.Option(
            "--sqlite-db",
            envvar="ORIS_SQLITE_DB",
            help="SQLite file.",
            show_default="oris_runtime.db",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="ORIS_SERVE_WORKERS",
            help="Start this many `oris worker` processes beside the server.",
            min=0,
        ),
    ] = 0,
) -> None:
    """Run the HTTP API (FastAPI + uvicorn) with background maintenance."""
    import uvicorn

    from oris.api.app import create_app
    from oris.config import ConfigError
    from oris.domain.errors import SchemaVersionError
    from oris.observability.logging import configure_logging

    settings = load_settings_or_exit(server_addr=addr, runtime_backend=backend, sqlite_db=sqlite_db)
    configure_logging(settings.log_format.value, settings.log_level)
    try:
        host, port = settings.host_port
        asyncio.run(_preflight(settings))
    except (ConfigError, SchemaVersionError) as error:
        fail(str(error))
    children = _start_workers(workers, host, port)
    if children:
        # uvicorn restores the previous SIGTERM handler and raises the signal again once it
        # has shut down; with the default handler the process would die before the finally
        # below, leaving the workers running. This handler stops them first.
        def _terminate(signum: int, _frame: object) -> None:
            _stop_workers(children)
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, _terminate)
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    finally:
        _stop_workers(children)


def _start_workers(count: int, host: str, port: int) -> list[subprocess.Popen[bytes]]:
    if count <= 0:
        return []
    env = {
        **os.environ,
        "ORIS_SERVER_URL": os.environ.get("ORIS_SERVER_URL", f"http://{host}:{port}"),
    }
    children = []
    for index in range(count):
        env_i = {**env, "ORIS_WORKER_ID": env.get("ORIS_WORKER_ID", f"local-worker-{index + 1}")}
        if count > 1 and "ORIS_WORKER_ID" in os.environ:
            env_i["ORIS_WORKER_ID"] = f"{os.environ['ORIS_WORKER_ID']}-{index + 1}"
        children.append(subprocess.Popen([sys.executable, "-m", "oris", "worker"], env=env_i))
    return children


def _stop_workers(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            # Longer than a worker's shutdown grace, so it can finish and ack before we give up.
            child.wait(
                timeout=float(os.environ.get("ORIS_WORKER_SHUTDOWN_GRACE_SECONDS", "30")) + 15
            )
        except subprocess.TimeoutExpired:
            child.kill()
