"""``oris worker``: poll the API for attempts and execute their workflows."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oris.cli.errors import EXIT_USAGE, fail

if TYPE_CHECKING:
    from oris.config import WorkerSettings

    # The worker runtime is imported inside the command, so other commands start without it.
    from oris.worker.registry import Registry


def _settings_or_exit(**overrides: Any) -> WorkerSettings:
    from pydantic import ValidationError

    from oris.config import WorkerSettings, describe_validation_error

    try:
        return WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        fail(describe_validation_error(error), EXIT_USAGE)


def _registry_or_exit(app: str | None) -> Registry:
    from oris.worker.builtins import builtin_registry
    from oris.worker.registry import AppLoadError, load_registry

    if not app:
        return builtin_registry()
    try:
        registry = load_registry(app)
    except AppLoadError as error:
        fail(str(error), EXIT_USAGE)
    if len(registry) == 0:
        fail(f"--app {app!r} has no workflows registered", EXIT_USAGE)
    return registry


def worker(
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server-url",
            envvar="ORIS_SERVER_URL",
            help="Base URL of the Oris API.",
            show_default="http://127.0.0.1:8080",
        ),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            envvar="ORIS_WORKER_ID",
            help="Identity this worker leases under.",
            show_default="<hostname>-<pid>",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            envvar="ORIS_WORKER_CONCURRENCY",
            help="Attempts executed at once.",
            show_default="4",
            min=1,
        ),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar="ORIS_WORKER_APP",
            help="module:attribute naming a Registry (or a zero-argument function returning "
            "one). Without it, the built-in workflows.",
            show_default="built-in workflows",
        ),
    ] = None,
    shutdown_grace_seconds: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace-seconds",
            envvar="ORIS_WORKER_SHUTDOWN_GRACE_SECONDS",
            help="On SIGTERM/SIGINT, how long running attempts may take to finish.",
            show_default="30",
            min=0,
        ),
    ] = None,
) -> None:
    """Run a worker: lease attempts from the API and execute their workflows."""
    from oris.observability.logging import configure_logging
    from oris.worker.runner import run_worker

    settings = _settings_or_exit(
        server_url=server_url,
        worker_id=worker_id,
        worker_concurrency=concurrency,
        worker_app=app,
        worker_shutdown_grace_seconds=shutdown_grace_seconds,
    )
    registry = _registry_or_exit(settings.worker_app)
    configure_logging(settings.log_format.value, settings.log_level)
    # One line per poll and heartbeat drowns the worker's own lines; keep httpx's warnings.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    raise typer.Exit(run_worker(settings, registry))
