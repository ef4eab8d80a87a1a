"""What every drill needs: scratch persistence, real processes, signals and expectations."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from oris.client import ApiError, OrisClient, ServerUnreachable
from oris.client.metrics import histogram_p95, parse_metrics, total
from oris.config import ClientSettings
from oris.drills.proxy import TcpProxy

# The runbook's signals, by the names it uses.
SIGNALS = (
    "oris_runtime_queue_depth",
    "oris_runtime_lease_conflict_rate",
    "oris_runtime_recovery_latency_ms",
    "oris_runtime_backpressure_total",
    "oris_runtime_terminal_error_rate",
)
# Time-scaled settings: the same mechanisms as production, in seconds instead of minutes.
SCALED_ENV = {
    "ORIS_LEASE_TTL_SECONDS": "2",
    "ORIS_LEASE_GRACE_SECONDS": "0.5",
    "ORIS_MAINTENANCE_INTERVAL_SECONDS": "0.2",
    "ORIS_METRICS_COUNT_INTERVAL_SECONDS": "0.2",
    "ORIS_METRICS_RATE_WINDOW_SECONDS": "6",
    "ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS": "0.2",
    "ORIS_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
    "ORIS_LOG_LEVEL": "WARNING",
}


@dataclass
class DrillConfig:
    """How drills run: backend, scratch area, output."""

    backend: str = "sqlite"
    dsn: str | None = None
    workdir: Path = field(default_factory=lambda: Path(".drills"))
    keep: bool = False
    echo: Callable[[str], None] = print


@dataclass
class Expectation:
    """One check a drill makes."""

    name: str
    ok: bool
    detail: str = ""


class DrillFailed(Exception):
    """A drill could not continue (an earlier expectation failed hard)."""


class Process:
    """A child ``oris`` process with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._handle = log.open("ab")
        self.popen = subprocess.Popen(args, env=env, stdout=self._handle, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal if it still runs."""
        if self.alive:
            self.popen.send_signal(sig)

    async def wait(self, seconds: float) -> int | None:
        """Exit code, or None if it did not exit in time."""
        try:
            return await asyncio.to_thread(self.popen.wait, seconds)
        except subprocess.TimeoutExpired:
            return None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        self.signal(signal.SIGTERM)
        if await self.wait(10) is None:
            self.signal(signal.SIGKILL)
            await self.wait(5)
        self._handle.close()

    def tail(self, lines: int = 20) -> str:
        """The end of its log."""
        self._handle.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def oris_argv(*args: str) -> list[str]:
    """How to run ``oris`` with this interpreter."""
    return [sys.executable, "-m", "oris.cli.main", *args]


class DrillRun:
    """One drill's world: its own database, server, workers, and what it observed."""

    def __init__(self, name: str, config: DrillConfig) -> None:
        self.name = name
        self.config = config
        self.root = (config.workdir / f"{name}-{secrets.token_hex(3)}").resolve()
        self.data_dir = self.root / "data"
        self.expectations: list[Expectation] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.processes: list[Process] = []
        self.server: Process | None = None
        self.port = 0
        self.schema = f"drill_{name.replace('-', '_')}_{secrets.token_hex(3)}"
        self.proxy: TcpProxy | None = None
        self._clients: list[OrisClient] = []

    # --- setup and teardown --------------------------------------------------------------

    @property
    def postgres(self) -> bool:
        """Whether this drill runs on PostgreSQL."""
        return self.config.backend == "postgres"

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def setup(self) -> None:
        """Create the scratch area (and the PostgreSQL proxy)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self.proxy = TcpProxy.for_dsn(self._dsn())
            await self.proxy.start()

    async def teardown(self) -> None:
        """Stop every process, close clients, drop the scratch schema."""
        for client in self._clients:
            await client.aclose()
        for process in self.processes:
            await process.stop()
        if self.proxy is not None:
            await self.proxy.start()
        if self.postgres:
            await asyncio.to_thread(self.psql, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            if self.proxy is not None:
                await self.proxy.stop()
        if not self.config.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _dsn(self) -> str:
        if not self.config.dsn:
            raise DrillFailed("--backend postgres needs --dsn (or ORIS_DRILL_POSTGRES_DSN)")
        return self.config.dsn

    def proxied_dsn(self) -> str:
        """The DSN the API uses: through the proxy, so a drill can cut it."""
        assert self.proxy is not None
        return self.proxy.routed(self._dsn())

    def psql(self, sql: str) -> str:
        """Run SQL directly against the drill's PostgreSQL (not through the proxy)."""
        result = subprocess.run(
            [
                "psql",
                self._dsn(),
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                f'SET search_path = "{self.schema}"; {sql}',
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DrillFailed(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    # --- processes -----------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for a child ``oris`` process of this drill."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}
        env.update(SCALED_ENV)
        env["ORIS_SERVER_URL"] = self.url
        if self.postgres:
            env.update(
                ORIS_RUNTIME_BACKEND="postgres",
                ORIS_POSTGRES_DSN=self.proxied_dsn(),
                ORIS_POSTGRES_SCHEMA=self.schema,
                ORIS_POSTGRES_REQUIRE_SCHEMA="false",
            )
        else:
            env.update(ORIS_RUNTIME_BACKEND="sqlite", ORIS_SQLITE_DB=str(self.data_dir / "oris.db"))
        env.update(overrides)
        return env

    def spawn(self, name: str, *args: str, **env: str) -> Process:
        """Start an ``oris`` child process."""
        process = Process(name, oris_argv(*args), self.env(**env), self.root / f"{name}.log")
        self.processes.append(process)
        return process

    async def start_server(self, **env: str) -> Process:
        """Start ``oris serve`` and wait until ``/healthz`` answers 200."""
        if not self.port:
            self.port = _free_port()
        process = self.spawn(
            f"serve-{len(self.processes)}",
            "serve",
            ORIS_SERVER_ADDR=f"127.0.0.1:{self.port}",
            **env,
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if not process.alive:
                    raise DrillFailed(f"oris serve exited early:\n{process.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        self.server = process
                        return process
                await asyncio.sleep(0.1)
        raise DrillFailed(f"oris serve did not become healthy:\n{process.tail()}")

    async def stop_server(self) -> None:
        """Stop the API (SIGTERM)."""
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def start_worker(
        self, worker_id: str, *, app: str | None = None, concurrency: int = 4, **env: str
    ) -> Process:
        """Start ``oris worker``."""
        args = ["worker", "--worker-id", worker_id, "--concurrency", str(concurrency)]
        if app is not None:
            args += ["--app", app]
        return self.spawn(worker_id, *args, **env)

    def client(self) -> OrisClient:
        """An API client for this drill's server."""
        client = OrisClient(ClientSettings(server_url=self.url, request_timeout_seconds=10))
        self._clients.append(client)
        return client

    # --- observation ---------------------------------------------------------------------

    async def metrics(self) -> dict[str, float]:
        """One scrape, parsed (empty if the server does not answer)."""
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return parse_metrics((await http.get(f"{self.url}/metrics")).text)
        except httpx.HTTPError:
            return {}

    async def snapshot(self, phase: str) -> dict[str, Any]:
        """Record the runbook's signals for a phase (before / during / after)."""
        scraped = await self.metrics()
        values: dict[str, Any] = {
            "oris_runtime_queue_depth": scraped.get("oris_runtime_queue_depth"),
            "oris_runtime_lease_conflict_rate": scraped.get("oris_runtime_lease_conflict_rate"),
            "oris_runtime_recovery_latency_ms": histogram_p95(
                scraped, "oris_runtime_recovery_latency_ms"
            ),
            "oris_runtime_backpressure_total": total(scraped, "oris_runtime_backpressure_total")
            if scraped
            else None,
            "oris_runtime_terminal_error_rate": scraped.get("oris_runtime_terminal_error_rate"),
            "backpressure_worker_limit": scraped.get(
                'oris_runtime_backpressure_total{reason="worker_limit"}'
            ),
            "backpressure_tenant_limit": scraped.get(
                'oris_runtime_backpressure_total{reason="tenant_limit"}'
            ),
            "dlq_pending": scraped.get('oris_runtime_dlq_depth{replay_status="pending"}'),
            "stale_leases": scraped.get("oris_runtime_stale_leases"),
            "dispatches_total": scraped.get("oris_runtime_dispatches_total"),
            "recovery_count": scraped.get("oris_runtime_recovery_latency_ms_count"),
        }
        self.phases[phase] = values
        return values

    def expect(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record an expectation; drills keep going so the report shows everything."""
        self.expectations.append(Expectation(name, bool(ok), detail))
        self.config.echo(f"  [{'ok' if ok else 'FAIL'}] {name}{f' - {detail}' if detail else ''}")
        return bool(ok)

    def note(self, text: str) -> None:
        """A line of narrative for the report."""
        self.notes.append(text)
        self.config.echo(f"  · {text}")

    async def eventually(
        self, probe: Callable[[], Awaitable[Any]], *, within: float, interval: float = 0.2
    ) -> Any:
        """Poll ``probe`` until it returns a truthy value or the timeout passes (then its last value)."""
        deadline = time.monotonic() + within
        value: Any = None
        while True:
            with contextlib.suppress(ApiError, ServerUnreachable, httpx.HTTPError):
                value = await probe()
                if value:
                    return value
            if time.monotonic() >= deadline:
                return value
            await asyncio.sleep(interval)

    async def job_statuses(self, thread_ids: list[str]) -> dict[str, str]:
        """Status of each job."""
        client = self.client()
        out = {}
        for thread_id in thread_ids:
            out[thread_id] = str((await client.inspect_job(thread_id))["status"])
        return out

    async def all_status(self, thread_ids: list[str], wanted: set[str]) -> bool:
        """Whether every job is in one of ``wanted``."""
        statuses = await self.job_statuses(thread_ids)
        return all(status in wanted for status in statuses.values())

    async def smoke(self, **env: str) -> bool:
        """The runbook's recovery validation: ``oris smoke`` against this server."""
        process = self.spawn(f"smoke-{len(self.processes)}", "smoke", **env)
        code = await process.wait(60)
        ok = code == 0
        self.expect("recovery validation: oris smoke passes", ok, "" if ok else process.tail(8))
        return ok

    def report(self) -> dict[str, Any]:
        """Everything observed, for ``--json``."""
        return {
            "drill": self.name,
            "backend": self.config.backend,
            "passed": all(e.ok for e in self.expectations) and bool(self.expectations),
            "phases": self.phases,
            "expectations": [e.__dict__ for e in self.expectations],
            "notes": self.notes,
            "workdir": str(self.root) if self.config.keep else None,
        }

    def signal_table(self) -> str:
        """The runbook's signals before / during / after, as a table."""
        phases = [p for p in ("before", "during", "after") if p in self.phases]
        header = f"  {'signal':<36}" + "".join(f"{p:>14}" for p in phases)
        rows = [header]
        for name in SIGNALS:
            cells = ""
            for phase in phases:
                value = self.phases[phase].get(name)
                cells += f"{'-' if value is None else f'{value:.6g}':>14}"
            rows.append(f"  {name:<36}{cells}")
        return "\n".join(rows)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
