"""Shared test plumbing: isolated databases on both backends, apps, real processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.config import ServerSettings, load_server_settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "ORIS_TEST_POSTGRES_DSN"
REQUIRE_ENV = "ORIS_REQUIRE_POSTGRES_TESTS"
_container_dsn: str | None = None


def postgres_dsn() -> str | None:
    """The PostgreSQL the tests use: ``ORIS_TEST_POSTGRES_DSN``, else a testcontainer."""
    global _container_dsn
    dsn = os.environ.get(POSTGRES_ENV, "").strip()
    if dsn:
        return dsn
    if _container_dsn is not None:
        return _container_dsn or None
    _container_dsn = ""
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15-alpine")
        container.start()
        _container_dsn = container.get_connection_url().replace("+psycopg2", "")
    except Exception:
        return None
    return _container_dsn


def require_postgres() -> str:
    """The DSN, or skip (fail when ``ORIS_REQUIRE_POSTGRES_TESTS=1``) with the reason."""
    dsn = postgres_dsn()
    if dsn is None:
        reason = f"PostgreSQL tests need {POSTGRES_ENV} (or a Docker engine for testcontainers)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason + f"; {REQUIRE_ENV}=1 forbids skipping them")
        pytest.skip(reason)
    return dsn


def server_settings(backend: str, tmp_path: Path, **overrides: Any) -> ServerSettings:
    """Settings pointing at a brand-new, isolated database (file or schema)."""
    base: dict[str, Any] = {
        "lease_ttl_seconds": 30.0,
        "lease_grace_seconds": 0.0,
        "maintenance_interval_seconds": 0.2,
        "log_format": "text",
    }
    if backend == "sqlite":
        base.update(
            runtime_backend="sqlite", sqlite_db=str(tmp_path / f"oris-{uuid.uuid4().hex[:8]}.db")
        )
    else:
        base.update(
            runtime_backend="postgres",
            postgres_dsn=require_postgres(),
            postgres_schema=f"t_{uuid.uuid4().hex[:12]}",
            postgres_require_schema=False,
        )
    base.update(overrides)
    return load_server_settings(**base)


def drop_schema(settings: ServerSettings) -> None:
    """Remove a test's PostgreSQL schema (SQLite files go with tmp_path)."""
    if settings.backend.value != "postgres":
        return
    dsn = settings.effective_postgres_dsn
    assert dsn is not None
    subprocess.run(
        ["psql", dsn, "-q", "-c", f'DROP SCHEMA IF EXISTS "{settings.postgres_schema}" CASCADE'],
        check=False,
        capture_output=True,
    )


def server_env(settings: ServerSettings, **extra: str) -> dict[str, str]:
    """Environment variables that make a child ``oris`` process use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}
    env.update(
        {
            "ORIS_RUNTIME_BACKEND": settings.backend.value,
            "ORIS_SQLITE_DB": settings.sqlite_db,
            "ORIS_POSTGRES_SCHEMA": settings.postgres_schema,
            "ORIS_POSTGRES_REQUIRE_SCHEMA": "false",
            "ORIS_LEASE_TTL_SECONDS": str(settings.lease_ttl_seconds),
            "ORIS_LEASE_GRACE_SECONDS": str(settings.lease_grace_seconds),
            "ORIS_MAINTENANCE_INTERVAL_SECONDS": str(settings.maintenance_interval_seconds),
            "ORIS_METRICS_COUNT_INTERVAL_SECONDS": str(settings.metrics_count_interval_seconds),
            "ORIS_UNACKED_FINISHED_BOUND_SECONDS": str(settings.unacked_finished_bound_seconds),
            "ORIS_LOG_FORMAT": "json",
        }
    )
    if settings.effective_postgres_dsn:
        env["ORIS_POSTGRES_DSN"] = settings.effective_postgres_dsn
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oris_command() -> list[str]:
    """How to start the ``oris`` console script from the test's interpreter."""
    script = shutil.which("oris", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "oris.cli.main"]


class Process:
    """A real child process with its output captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return int(self.popen.returncode)


def wait_until(
    predicate: Any, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}; last value: {last!r}")


@contextlib.contextmanager
def running_server(settings: ServerSettings, tmp_path: Path, **env: str) -> Iterator[str]:
    """Start ``oris serve`` as a subprocess and yield its base URL once healthy."""
    port = free_port()
    process = Process(
        [*oris_command(), "serve"],
        server_env(settings, ORIS_SERVER_ADDR=f"127.0.0.1:{port}", **env),
        tmp_path / f"serve-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"oris serve exited early:\n{process.output()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=30, message="oris serve to become healthy")
        yield url
    finally:
        process.stop()


async def lifespan_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound to the app in-process, with its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(
            app=app, client=("127.0.0.1", 5555), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://oris.test") as client:
            yield client
