"""Oris runtime benchmark driver: drain, submit, latency, API hot paths, recovery, depth, peers.

Run it through ``scripts/bench/run.sh`` (which prepares both venvs); see README.md beside this
file. Runs from the project venv; the peers (pgqueuer, procrastinate) run from ``.bench/venv``
through ``peers.py``. Every workload gets fresh PostgreSQL databases (dropped afterwards), every
loop is bounded in count and time, and all traffic stays on the loopback interface.

Prints a table and writes ``.bench/results-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from loadgen import LoadClient

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / ".bench"
LOG_DIR = BENCH_DIR / "logs"
PEER_PY = BENCH_DIR / "venv" / "bin" / "python"
PY_SPY = BENCH_DIR / "venv" / "bin" / "py-spy"
PEERS = Path(__file__).resolve().parent / "peers.py"
APP_DIR = Path(__file__).resolve().parent
SCHEMA = "oris_runtime"
DB_PREFIX = "oris_bench_"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The "oris-wide" drain: one oris worker running this many attempts at once (the server's
# per-worker lease cap raised to match), next to the default of 8; "oris-2w" splits the same
# number over two worker processes.
WIDE_CONCURRENCY = 64
# The latency workload also runs two API replicas from this rate up ("oris-2api").
LATENCY_REPLICAS_FROM_RATE = 200

Json = dict[str, Any]


# --------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """Sizes of every workload; ``--quick`` shrinks them."""

    quick: bool = False
    runs: int = 3
    drain_jobs: int = 20_000
    drain_limit1_jobs: int = 5_000
    drain_timeout_s: float = 900.0
    worker_concurrency: int = 8
    submit_jobs: int = 3_000
    submit_clients: int = 16
    latency_rates: list[int] = field(default_factory=lambda: [50, 500])
    latency_seconds: float = 10.0
    idle_window_s: float = 5.0
    latency_drain_wait_s: float = 40.0
    api_jobs: int = 2_000
    api_ops: int = 2_000
    api_clients: int = 16
    recovery_rounds: int = 3
    recovery_jobs_per_round: int = 5
    kill_samples: int = 3
    depth_rows: int = 1_000_000
    depth_polls: int = 300
    depth_submits: int = 200
    depth_scrapes: int = 20
    profile_seconds: float = 20.0
    pg_base: str = "postgresql://postgres@127.0.0.1:5432"
    only: list[str] = field(default_factory=list)
    drain_variants: list[str] = field(default_factory=list)
    peers: bool = True
    profile: bool = False

    @classmethod
    def quick_mode(cls) -> Config:
        return cls(
            quick=True,
            runs=2,
            drain_jobs=2_000,
            drain_limit1_jobs=500,
            drain_timeout_s=300.0,
            submit_jobs=600,
            latency_seconds=3.0,
            idle_window_s=3.0,
            api_jobs=300,
            api_ops=300,
            recovery_rounds=1,
            kill_samples=1,
            depth_rows=100_000,
            depth_polls=100,
            depth_submits=50,
            depth_scrapes=5,
            profile_seconds=8.0,
        )

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


# --------------------------------------------------------------------------- small helpers


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def dist(values: Sequence[float]) -> Json:
    """p50/p95/p99/max/mean of a sample."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def summary(values: Sequence[float | None]) -> Json:
    """Median with min-max over runs (None values are dropped)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": 0, "values": []}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": len(clean),
        "values": clean,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def run_cmd(argv: list[str], **kwargs: Any) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout


# --------------------------------------------------------------------------- CPU accounting


def proc_cpu(pid: int) -> float:
    """User + system seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _postgres_backends(dbname: str) -> dict[int, float]:
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith("postgres:") and f" {dbname} " in cmdline:
            found[int(entry.name)] = proc_cpu(int(entry.name))
    return found


def _system_busy() -> float:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(p) for p in parts]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU seconds used by our processes, by the database's backends, and by everything else."""

    def __init__(self, dbname: str, pids: dict[str, int]) -> None:
        self.dbname = dbname
        self.pids = pids
        self.start_procs = {name: proc_cpu(pid) for name, pid in pids.items()}
        self.start_pg = _postgres_backends(dbname)
        self.start_busy = _system_busy()
        self.start_wall = time.monotonic()
        self.start_load = os.getloadavg()[0]

    def stop(self) -> Json:
        wall = time.monotonic() - self.start_wall
        procs = {
            name: proc_cpu(pid) - self.start_procs.get(name, 0.0) for name, pid in self.pids.items()
        }
        end_pg = _postgres_backends(self.dbname)
        pg = sum(cpu - self.start_pg.get(pid, 0.0) for pid, cpu in end_pg.items())
        busy = _system_busy() - self.start_busy
        ours = sum(procs.values()) + pg
        return {
            "wall_s": wall,
            "cpu_s": {name: round(v, 3) for name, v in procs.items()},
            "postgres_backends_cpu_s": round(pg, 3),
            "other_cpu_s": round(max(busy - ours, 0.0), 3),
            "cores_busy": round(busy / wall, 3) if wall else None,
            "loadavg_1m": [round(self.start_load, 2), round(os.getloadavg()[0], 2)],
        }


# --------------------------------------------------------------------------- PostgreSQL


class Pg:
    """Creates and drops the benchmark's databases; keeps track so nothing is left behind."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.created: list[str] = []

    def dsn(self, name: str) -> str:
        return f"{self.base}/{name}"

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn("postgres"))

    async def create(self, label: str) -> str:
        name = f"{DB_PREFIX}{label}_{os.getpid()}_{random.randrange(16**6):06x}"[:63]
        conn = await self.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return name

    async def drop(self, name: str) -> None:
        conn = await self.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        with contextlib.suppress(ValueError):
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):
                await self.drop(name)

    async def connect(self, name: str, *, oris_schema: bool = True) -> asyncpg.Connection:
        settings = {"search_path": SCHEMA} if oris_schema else {}
        return await asyncpg.connect(self.dsn(name), server_settings=settings)

    async def facts(self) -> Json:
        conn = await self.admin()
        try:
            out: Json = {"server_version": await conn.fetchval("SHOW server_version")}
            for setting in (
                "shared_buffers",
                "synchronous_commit",
                "fsync",
                "max_connections",
                "plan_cache_mode",
            ):
                out[setting] = await conn.fetchval(f"SHOW {setting}")
            return out
        finally:
            await conn.close()


async def db_stats(pg: Pg, name: str) -> Json:
    """Cumulative counters of one database (flushed by backends at most once a second)."""
    conn = await pg.admin()
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "tup_fetched, tup_returned, blks_hit, blks_read, sessions "
            "FROM pg_stat_database WHERE datname = $1",
            name,
        )
        return dict(row) if row else {}
    finally:
        await conn.close()


def stats_delta(before: Json, after: Json, per: int) -> Json:
    out: Json = {}
    for key, value in after.items():
        delta = value - before.get(key, 0)
        out[key] = delta
        if per:
            out[f"{key}_per_job"] = round(delta / per, 3)
    return out


# --------------------------------------------------------------------------- processes


class Proc:
    """A child process in its own session, logging to ``.bench/logs``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=BENCH_DIR,  # not the repo root: `-m oris...` must import this venv's oris
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def base_env() -> dict[str, str]:
    """The inherited environment without any ORIS_* setting, so runs are reproducible."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}


def oris_env(dsn: str, **extra: Any) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "ORIS_RUNTIME_BACKEND": "postgres",
            "ORIS_POSTGRES_DSN": dsn,
            "ORIS_POSTGRES_REQUIRE_SCHEMA": "false",
            "ORIS_LOG_LEVEL": "WARNING",
            "ORIS_LOG_FORMAT": "json",
        }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


ORIS_CMD = [sys.executable, "-m", "oris.cli.main"]


def oris_upgrade(dsn: str) -> None:
    run_cmd([*ORIS_CMD, "db", "upgrade"], env=oris_env(dsn), cwd=BENCH_DIR)


class Server:
    """``oris serve`` on a free loopback port."""

    def __init__(self, name: str, dsn: str, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = oris_env(dsn, ORIS_SERVER_ADDR=f"127.0.0.1:{self.port}", **settings)
        self.proc = Proc(name, [*ORIS_CMD, "serve"], env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self.proc.alive():
                    raise RuntimeError(f"oris serve exited:\n{self.proc.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"oris serve not ready after {limit_s}s:\n{self.proc.tail()}")

    async def metrics(self) -> str:
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0) as http:
            return (await http.get("/metrics")).text

    def stop(self) -> None:
        self.proc.stop()


def start_worker(
    name: str, server: Server, dsn: str, concurrency: int, *, app: bool = False, **extra: Any
) -> Proc:
    settings: dict[str, Any] = {
        "ORIS_SERVER_URL": server.url,
        "ORIS_WORKER_ID": name,
        "ORIS_WORKER_CONCURRENCY": concurrency,
        **extra,
    }
    env = oris_env(dsn, **settings)
    if app:
        env["ORIS_WORKER_APP"] = "oris_bench_app:registry"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP_DIR), env.get("PYTHONPATH")]))
    return Proc(name, [*ORIS_CMD, "worker"], env)


def peer(command: str, system: str, dsn: str, *args: str, timeout: float = 600.0) -> Json:
    """Run one ``peers.py`` step in the bench venv and return its JSON answer."""
    out = subprocess.run(
        [str(PEER_PY), str(PEERS), command, "--system", system, "--dsn", dsn, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base_env(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"peers.py {command} {system} failed: {out.stderr[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def peer_worker(name: str, system: str, dsn: str, *args: str) -> Proc:
    return Proc(
        name,
        [str(PEER_PY), str(PEERS), "worker", "--system", system, "--dsn", dsn, *args],
        base_env(),
    )


# --------------------------------------------------------------------------- Oris seeding


async def seed_oris(
    conn: asyncpg.Connection, n: int, prefix: str, *, workflow: str = "echo", history: bool = True
) -> None:
    """``n`` queued jobs exactly as ``POST /v1/jobs/run`` leaves them, in 4 set-based statements.

    Columns follow ``oris.services.jobs._start_run``/``attempt_values``: a job row, its first
    attempt (queued, attempt_no 1), and with ``history`` the initial checkpoint (seq 0, ``{}``,
    the attempt's ``start_checkpoint_id``) and the ``job_queued`` timeline event. The audit row
    is not written (nothing reads it on the dispatch path).
    """
    now = now_ms()
    threads = "SELECT $1::text || g::text AS t FROM generate_series(1, $2::int) AS g"
    await conn.execute(
        f"""INSERT INTO runtime_jobs (thread_id, status, workflow, input_json, priority, run_no,
                current_attempt_id, created_at_ms, updated_at_ms)
            SELECT t, 'queued', $3, '{{"bench": true}}', 0, 1,
                   'attempt-' || t || '-' || md5(t)::uuid::text, $4, $4
            FROM ({threads}) AS s""",
        prefix,
        n,
        workflow,
        now,
    )
    if history:
        await conn.execute(
            f"""INSERT INTO runtime_checkpoints (checkpoint_id, thread_id, attempt_id, seq, step,
                    state_json, created_at_ms)
                SELECT 'cp-' || md5('cp' || t), t, NULL, 0, NULL, '{{}}', $3
                FROM ({threads}) AS s""",
            prefix,
            n,
            now,
        )
    await conn.execute(
        f"""INSERT INTO runtime_attempts (attempt_id, run_id, run_no, attempt_no, retry_base_no,
                status, kind, workflow, priority, tenant_id, available_at_ms, trace_id,
                trace_parent_span_id, trace_span_id, trace_flags, start_checkpoint_id,
                created_at_ms, updated_at_ms)
            SELECT 'attempt-' || t || '-' || md5(t)::uuid::text, t, 1, 1, 0, 'queued', 'run', $3,
                   0, NULL, $4, md5('trace' || t), NULL, substr(md5('span' || t), 1, 16), '01',
                   CASE WHEN $5::bool THEN 'cp-' || md5('cp' || t) END, $4, $4
            FROM ({threads}) AS s""",
        prefix,
        n,
        workflow,
        now,
        history,
    )
    if history:
        await conn.execute(
            f"""INSERT INTO runtime_timeline_events (thread_id, attempt_id, event_type,
                    checkpoint_id, details_json, created_at_ms)
                SELECT t, 'attempt-' || t || '-' || md5(t)::uuid::text, 'job_queued',
                       'cp-' || md5('cp' || t),
                       json_build_object('run_no', 1, 'workflow', $3::text,
                                         'request_id', 'bench-seed')::text, $4
                FROM ({threads}) AS s""",
            prefix,
            n,
            workflow,
            now,
        )


async def oris_progress(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'completed') AS done, count(*) AS total "
        "FROM runtime_attempts"
    )
    assert row is not None
    return int(row["done"]), int(row["total"])


async def verify_oris(conn: asyncpg.Connection, n: int) -> Json:
    """All ``n`` jobs completed, each by exactly one dispatch of attempt number 1."""
    jobs = await conn.fetchval("SELECT count(*) FROM runtime_jobs WHERE status = 'completed'")
    bad_attempts = await conn.fetchval(
        "SELECT count(*) FROM runtime_attempts WHERE status <> 'completed' OR attempt_no <> 1"
    )
    events = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE d <> 1) AS not_once, count(*) FILTER (WHERE r > 0) AS rec,
                  count(*) FILTER (WHERE d = 1 AND no1 = 1) AS ok
           FROM (SELECT a.attempt_id,
                        count(e.*) FILTER (WHERE e.event_type = 'attempt_dispatched') AS d,
                        count(e.*) FILTER (WHERE e.event_type = 'attempt_recovered') AS r,
                        count(e.*) FILTER (WHERE e.event_type = 'attempt_dispatched'
                              AND (e.details_json::json ->> 'attempt_no') = '1') AS no1
                 FROM runtime_attempts a
                 LEFT JOIN runtime_timeline_events e ON e.attempt_id = a.attempt_id
                 GROUP BY a.attempt_id) AS per_attempt"""
    )
    leases = await conn.fetchval(
        "SELECT count(*) FROM (SELECT attempt_id FROM runtime_leases GROUP BY attempt_id "
        "HAVING count(*) <> 1) AS x"
    )
    assert events is not None
    result = {
        "jobs_completed": int(jobs),
        "attempts_not_completed_or_rerun": int(bad_attempts),
        "attempts_without_exactly_one_dispatch": int(events["not_once"]),
        "attempts_recovered": int(events["rec"]),
        "attempts_dispatched_once_as_no_1": int(events["ok"]),
        "attempts_with_more_than_one_lease": int(leases),
    }
    result["ok"] = (
        result["jobs_completed"] == n
        and result["attempts_dispatched_once_as_no_1"] == n
        and not (bad_attempts or events["not_once"] or events["rec"] or leases)
    )
    return result


async def wait_until(
    check: Callable[[], Awaitable[bool]], limit_s: float, interval: float = 0.2
) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()


# --------------------------------------------------------------------------- /metrics parsing

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            with contextlib.suppress(ValueError):
                out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out


def histogram(samples: dict[tuple[str, str], float], name: str) -> Json:
    buckets: list[tuple[float, float]] = []
    for (metric, labels), value in samples.items():
        if metric == f"{name}_bucket":
            bound = re.search(r'le="([^"]+)"', labels)
            if bound:
                buckets.append((float(bound.group(1)), value))
    buckets.sort()
    return {
        "buckets": buckets,
        "sum": samples.get((f"{name}_sum", ""), 0.0),
        "count": samples.get((f"{name}_count", ""), 0.0),
    }


def histogram_delta(before: Json, after: Json) -> Json:
    earlier = dict(before["buckets"])
    return {
        "buckets": [(b, v - earlier.get(b, 0.0)) for b, v in after["buckets"]],
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def histogram_quantile(hist: Json, q: float) -> float | None:
    """Prometheus-style estimate: linear interpolation inside the bucket holding the rank."""
    total = hist["count"]
    if not total:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, cumulative in hist["buckets"]:
        if cumulative >= rank:
            if bound == float("inf"):
                return previous_bound
            width = cumulative - previous_count
            if width <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / width
        previous_bound, previous_count = bound, cumulative
    return previous_bound


def histogram_summary(hist: Json) -> Json:
    count = hist["count"]
    return {
        "count": count,
        "mean": hist["sum"] / count if count else None,
        "p50": histogram_quantile(hist, 0.50),
        "p95": histogram_quantile(hist, 0.95),
        "p99": histogram_quantile(hist, 0.99),
        "buckets": hist["buckets"],
    }


def poll_requests(samples: dict[tuple[str, str], float]) -> float:
    return sum(
        v
        for (metric, labels), v in samples.items()
        if metric == "oris_runtime_http_requests_total" and 'route="/v1/workers/poll"' in labels
    )


# --------------------------------------------------------------------------- profiling


_THIRD_PARTY = {
    "sqlalchemy",
    "asyncpg",
    "uvicorn",
    "h11",
    "httptools",
    "starlette",
    "fastapi",
    "pydantic",
    "pydantic_core",
    "orjson",
    "anyio",
    "httpx",
    "httpcore",
    "greenlet",
}
_IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "Thread._bootstrap")


def _layer(frame: str) -> str | None:
    """The package a py-spy frame belongs to, for the layers we care about (else None)."""
    match = re.search(r"\(([^()]*):\d+\)$", frame)
    path = match.group(1) if match else ""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = path.split("/")
    if parts[0] == "oris" and len(parts) > 1:
        return "oris." + parts[1].removesuffix(".py")
    return parts[0] if parts[0] in _THIRD_PARTY else None


def summarize_profile(raw_path: Path, top: int = 15) -> Json:
    """Where the busy samples of a py-spy raw profile go.

    ``by_layer_pct``: each sample goes to the innermost frame of a known layer (SQLAlchemy,
    asyncpg, uvicorn, ..., ``oris.<package>``); a socket ``write`` syscall is its own layer,
    named after the layer that called it. ``inclusive_oris_pct``: share of samples under each
    Oris function. Idle samples (threads waiting, the selector) are counted apart.
    """
    by_layer: collections.Counter[str] = collections.Counter()
    by_oris: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    idle = 0
    try:
        lines = raw_path.read_text().splitlines()
    except OSError:
        return {"error": f"no profile at {raw_path}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(word in leaf for word in _IDLE_LEAVES):
            idle += count
            continue
        total += count
        by_leaf[re.sub(r":\d+\)$", ")", leaf) or "(native)"] += count
        if "_SelectorSocketTransport.write" in leaf:
            caller = next((_layer(f) for f in reversed(frames[:-1]) if _layer(f)), None)
            by_layer[f"socket write syscall (from {caller})"] += count
        else:
            layer = next((_layer(f) for f in reversed(frames) if _layer(f)), None)
            by_layer[layer or "stdlib / native"] += count
        for frame in set(frames):
            if "(oris/" in frame:
                by_oris[re.sub(r":\d+\)$", ")", frame)] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples_busy": total,
        "samples_idle": idle,
        "by_layer_pct": share(by_layer),
        "self_by_frame_pct": share(by_leaf),
        "inclusive_oris_pct": share(by_oris),
    }


def py_spy(pid: int, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
    if not PY_SPY.exists():
        return None
    raw = BENCH_DIR / f"profile-{name}.txt"
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def py_spy_svg(pid: int, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
    if not PY_SPY.exists():
        return None
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--nonblocking",
            "--output",
            str(BENCH_DIR / f"profile-{name}.svg"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- workloads


class Bench:
    def __init__(self, cfg: Config, pg: Pg) -> None:
        self.cfg = cfg
        self.pg = pg
        self.results: Json = {}

    # ------------------------------------------------------------------ drain

    async def drain_oris(self, variant: str, run: int, *, profile: bool = False) -> Json:
        """Seed N queued echo jobs, then drain them over HTTP; time from the database."""
        cfg = self.cfg
        limit1 = variant in ("oris-limit1", "oris-loop1")
        n = cfg.drain_limit1_jobs if limit1 else cfg.drain_jobs
        if profile:  # enough work for the sampling window, no more
            n = min(n, max(int(cfg.profile_seconds * 150), 1000))
        concurrency = 1 if limit1 else cfg.worker_concurrency
        if variant == "oris-wide":
            concurrency = WIDE_CONCURRENCY
        workers = 2 if variant == "oris-2w" else 1
        if variant == "oris-2w":
            concurrency = WIDE_CONCURRENCY // 2
        name = await self.pg.create(f"drain_{variant.replace('-', '_')}")
        dsn = self.pg.dsn(name)
        server: Server | None = None
        worker: Proc | None = None
        more_workers: list[Proc] = []
        try:
            oris_upgrade(dsn)
            conn = await self.pg.connect(name)
            await seed_oris(conn, n, f"drain-{run}-")
            await conn.execute("VACUUM ANALYZE")
            server = Server(
                f"serve-{name}", dsn, ORIS_MAX_ACTIVE_LEASES_PER_WORKER=max(concurrency, 8)
            )
            await server.ready()
            before = await db_stats(self.pg, name)
            scans_before = await table_scans(conn)
            profilers: list[subprocess.Popen[bytes] | None] = []
            loop_task: asyncio.Task[int] | None = None
            pids = {"serve": server.pid}
            if variant == "oris-loop1":
                loop_task = asyncio.create_task(poll_ack_loop(server.url, "bench-loop1"))
            else:
                worker = start_worker(f"worker-{name}", server, dsn, concurrency)
                pids["worker"] = worker.pid
                for index in range(2, workers + 1):
                    more = start_worker(f"worker{index}-{name}", server, dsn, concurrency)
                    more_workers.append(more)
                    pids[f"worker{index}"] = more.pid
            meter = CpuMeter(name, pids)
            if profile:
                await asyncio.sleep(1.0)
                profilers = [
                    py_spy(server.pid, "serve", cfg.profile_seconds),
                    py_spy_svg(server.pid, "serve", cfg.profile_seconds),
                ]
                if worker is not None:
                    profilers.append(py_spy(worker.pid, "worker", cfg.profile_seconds))

            async def finished() -> bool:
                done, _ = await oris_progress(conn)
                return done >= n

            completed = await wait_until(finished, cfg.drain_timeout_s, 0.25)
            cpu = meter.stop()
            for proc in profilers:
                if proc is not None:
                    proc.wait(timeout=cfg.profile_seconds + 30)
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loop_task
            if worker is not None:
                worker.stop()
            for more in more_workers:
                more.stop()
            await asyncio.sleep(1.2)  # backends flush their statistics at most once a second
            after = await db_stats(self.pg, name)
            scans_after = await table_scans(conn)
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'completed') AS done, "
                "min(started_at_ms) AS first, max(finished_at_ms) AS last FROM runtime_attempts"
            )
            assert row is not None
            check = await verify_oris(conn, n)
            await conn.close()
            span_s = (row["last"] - row["first"]) / 1000 if row["first"] and row["last"] else None
            done = int(row["done"])
            result = {
                "system": variant,
                "n": n,
                "completed": done,
                "timed_out": not completed,
                "seconds": span_s,
                "jobs_per_s": done / span_s if span_s else None,
                "verify": check,
                "db": stats_delta(before, after, done),
                "table_scans_per_job": scans_delta(scans_before, scans_after, done),
                "cpu": cpu,
                "worker_concurrency": concurrency if variant != "oris-loop1" else 1,
                "worker_processes": workers,
            }
            if profile:
                result["profile"] = {
                    "serve": summarize_profile(BENCH_DIR / "profile-serve.txt"),
                    "worker": summarize_profile(BENCH_DIR / "profile-worker.txt"),
                    "svg": str(BENCH_DIR / "profile-serve.svg"),
                }
            return result
        finally:
            if worker is not None:
                worker.stop()
            for more in more_workers:
                more.stop()
            if server is not None:
                server.stop()
            await self.pg.drop(name)

    async def drain_peer(self, variant: str, run: int) -> Json:
        cfg = self.cfg
        system = "pgqueuer" if variant.startswith("pgqueuer") else "procrastinate"
        batch = "1" if variant == "pgqueuer-b1" else "10"
        n = cfg.drain_jobs
        name = await self.pg.create(f"drain_{variant.replace('-', '_')}")
        dsn = self.pg.dsn(name)
        worker: Proc | None = None
        try:
            peer("install", system, dsn)
            peer("seed", system, dsn, "--n", str(n))
            conn = await self.pg.connect(name, oris_schema=False)
            await conn.execute("VACUUM ANALYZE")
            before = await db_stats(self.pg, name)
            worker = peer_worker(f"{variant}-{name}", system, dsn, "--drain", "--batch-size", batch)
            meter = CpuMeter(name, {"worker": worker.pid})

            async def finished() -> bool:
                if system == "pgqueuer":
                    done = await conn.fetchval(
                        "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
                    )
                else:
                    done = await conn.fetchval(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                    )
                return int(done) >= n or not worker.alive()

            completed = await wait_until(finished, cfg.drain_timeout_s, 0.25)
            cpu = meter.stop()
            await asyncio.to_thread(_wait_proc, worker, 30.0)
            worker.stop()
            await asyncio.sleep(1.2)
            after = await db_stats(self.pg, name)
            if system == "pgqueuer":
                row = await conn.fetchrow(
                    """SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))
                                  AS first,
                              extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))
                                  AS last,
                              count(*) FILTER (WHERE status = 'successful') AS done,
                              count(DISTINCT job_id) FILTER (WHERE status = 'successful')
                                  AS done_distinct,
                              count(*) FILTER (WHERE status = 'picked') AS picked
                       FROM pgqueuer_log"""
                )
                left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
                assert row is not None
                check = {
                    "successful": int(row["done"]),
                    "successful_distinct": int(row["done_distinct"]),
                    "picked": int(row["picked"]),
                    "left_in_queue": int(left),
                }
                check["ok"] = row["done_distinct"] == n == row["picked"] and left == 0
            else:
                row = await conn.fetchrow(
                    """SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'started')) AS first,
                              extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))
                                  AS last,
                              count(*) FILTER (WHERE type = 'succeeded') AS done,
                              count(*) FILTER (WHERE type = 'started') AS started
                       FROM procrastinate_events"""
                )
                assert row is not None
                ok_jobs = await conn.fetchval(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                )
                check = {"succeeded": int(ok_jobs), "started_events": int(row["started"])}
                check["ok"] = ok_jobs == n == row["started"]
            await conn.close()
            span = float(row["last"] - row["first"]) if row["first"] and row["last"] else None
            done = int(row["done"])
            return {
                "system": variant,
                "n": n,
                "completed": done,
                "timed_out": not completed,
                "seconds": span,
                "jobs_per_s": done / span if span else None,
                "verify": check,
                "db": stats_delta(before, after, done),
                "cpu": cpu,
                "batch_size": int(batch) if system == "pgqueuer" else None,
            }
        finally:
            if worker is not None:
                worker.stop()
            await self.pg.drop(name)

    async def workload_drain(self) -> None:
        cfg = self.cfg
        variants = ["oris", "oris-wide", "oris-2w", "oris-limit1", "oris-loop1"]
        if cfg.peers:
            variants += ["pgqueuer", "pgqueuer-b1", "procrastinate"]
        if cfg.drain_variants:
            variants = [v for v in variants if v in cfg.drain_variants]
        runs: dict[str, list[Json]] = {v: [] for v in variants}
        for run in range(cfg.runs):
            for variant in variants:
                log(f"drain run {run + 1}/{cfg.runs}: {variant}")
                try:
                    if variant.startswith("oris"):
                        result = await self.drain_oris(variant, run)
                    else:
                        result = await self.drain_peer(variant, run)
                except Exception as error:  # keep going: one broken variant must not stop all
                    result = {"system": variant, "error": repr(error)}
                log(
                    f"  -> {fmt(result.get('jobs_per_s'))} jobs/s "
                    f"verify ok={result.get('verify', {}).get('ok')}"
                )
                runs[variant].append(result)
        self.results["drain"] = {
            v: {"jobs_per_s": summary([r.get("jobs_per_s") for r in rs]), "runs": rs}
            for v, rs in runs.items()
        }

    async def workload_profile(self) -> None:
        """One extra drain (not counted) with py-spy on the API process and the worker."""
        self.results["profile"] = await self.drain_oris("oris", 99, profile=True)
        self.results["profile"]["note"] = "not counted in the drain figures"

    # ------------------------------------------------------------------ submit

    async def submit_oris(self, run: int) -> Json:
        cfg = self.cfg
        name = await self.pg.create("submit_oris")
        dsn = self.pg.dsn(name)
        server = Server(f"serve-{name}", dsn)
        try:
            await server.ready()
            before = await db_stats(self.pg, name)
            meter = CpuMeter(name, {"serve": server.pid})
            result = await closed_loop_submit(server.url, cfg.submit_jobs, cfg.submit_clients, run)
            result["cpu"] = meter.stop()
            result["server_cpu_ms_per_job"] = (
                1000 * result["cpu"]["cpu_s"]["serve"] / max(cfg.submit_jobs, 1)
            )
            await asyncio.sleep(1.2)
            result["db"] = stats_delta(before, await db_stats(self.pg, name), cfg.submit_jobs)
            result["system"] = "oris"
            return result
        finally:
            server.stop()
            await self.pg.drop(name)

    async def submit_peer(self, system: str) -> Json:
        cfg = self.cfg
        name = await self.pg.create(f"submit_{system}")
        dsn = self.pg.dsn(name)
        try:
            peer("install", system, dsn)
            before = await db_stats(self.pg, name)
            result = peer(
                "submit",
                system,
                dsn,
                "--n",
                str(cfg.submit_jobs),
                "--clients",
                str(cfg.submit_clients),
            )
            await asyncio.sleep(1.2)
            result["db"] = stats_delta(before, await db_stats(self.pg, name), cfg.submit_jobs)
            result["system"] = system
            return result
        finally:
            await self.pg.drop(name)

    async def workload_submit(self) -> None:
        cfg = self.cfg
        systems = ["oris"] + (["pgqueuer", "procrastinate"] if cfg.peers else [])
        runs: dict[str, list[Json]] = {s: [] for s in systems}
        for run in range(cfg.runs):
            for system in systems:
                log(f"submit run {run + 1}/{cfg.runs}: {system}")
                try:
                    result = (
                        await self.submit_oris(run)
                        if system == "oris"
                        else await self.submit_peer(system)
                    )
                except Exception as error:
                    result = {"system": system, "error": repr(error)}
                log(f"  -> {fmt(result.get('jobs_per_s'))} jobs/s")
                runs[system].append(result)
        self.results["submit"] = {
            s: {
                "jobs_per_s": summary([r.get("jobs_per_s") for r in rs]),
                "p95_ms": summary([r.get("p95_ms") for r in rs]),
                "server_cpu_ms_per_job": summary([r.get("server_cpu_ms_per_job") for r in rs]),
                "client_cpu_ms_per_job": summary([r.get("client_cpu_ms_per_job") for r in rs]),
                "runs": rs,
            }
            for s, rs in runs.items()
        }

    # ------------------------------------------------------------------ latency

    async def latency_oris(self, rate: int, run: int, replicas: int = 1) -> Json:
        """Open-loop submits while one worker runs them. With ``replicas`` > 1, that many
        ``oris serve`` processes share the database: submits go round-robin over all of them,
        the worker polls the first (whose histogram gives poll → dispatch)."""
        cfg = self.cfg
        name = await self.pg.create(f"latency_oris_{rate}")
        dsn = self.pg.dsn(name)
        stamp_file = BENCH_DIR / f"stamps-{name}.txt"
        servers = [
            Server(
                f"serve-{name}" + (f"-{index}" if index else ""),
                dsn,
                ORIS_MAX_ACTIVE_LEASES_PER_WORKER=cfg.worker_concurrency,
            )
            for index in range(replicas)
        ]
        server = servers[0]
        worker: Proc | None = None
        try:
            for each in servers:
                await each.ready()
            worker = start_worker(
                f"worker-{name}",
                server,
                dsn,
                cfg.worker_concurrency,
                app=True,
                ORIS_BENCH_STAMP_FILE=stamp_file,
            )
            await asyncio.sleep(3.0)
            idle = await self.idle_window(name, server)
            m0 = parse_metrics(await server.metrics())
            pids = {f"serve{index}": each.pid for index, each in enumerate(servers)}
            meter = CpuMeter(name, {**pids, "worker": worker.pid, "load": os.getpid()})
            submitted, submit_lat, behind = await open_loop_submit(
                [each.url for each in servers], rate, cfg.latency_seconds, f"lat-{rate}-{run}-"
            )
            cpu = meter.stop()
            conn = await self.pg.connect(name)

            async def finished() -> bool:
                done, _ = await oris_progress(conn)
                return done >= len(submitted)

            await wait_until(finished, cfg.latency_drain_wait_s, 0.2)
            m1 = parse_metrics(await server.metrics())
            rows = await conn.fetch("SELECT run_id, started_at_ms FROM runtime_attempts")
            await conn.close()
            worker.stop()
            lease = [
                r["started_at_ms"] - submitted[r["run_id"]] * 1000
                for r in rows
                if r["run_id"] in submitted and r["started_at_ms"] is not None
            ]
            handler = read_stamps(stamp_file)
            dispatch = histogram_delta(
                histogram(m0, "oris_runtime_dispatch_latency_ms"),
                histogram(m1, "oris_runtime_dispatch_latency_ms"),
            )
            return {
                "system": "oris",
                "rate": rate,
                "submitted": len(submitted),
                "handler_started": len(handler),
                "submit_to_handler_ms": dist(handler),
                "submit_to_lease_ms": dist(lease),
                "poll_to_dispatch_ms": histogram_summary(dispatch),
                "submit_call_ms": dist(submit_lat),
                "achieved_submit_rate": achieved_rate(list(submitted.values())),
                "schedule_behind_max_ms": max(behind) if behind else 0.0,
                "replicas": replicas,
                "cpu_while_submitting": cpu,
                "idle": idle,
            }
        finally:
            if worker is not None:
                worker.stop()
            for each in servers:
                each.stop()
            await self.pg.drop(name)
            with contextlib.suppress(OSError):
                stamp_file.unlink()

    async def idle_window(self, name: str, server: Server | None) -> Json:
        """Polls and database transactions per second while the worker has nothing to do."""
        before = await db_stats(self.pg, name)
        m0 = parse_metrics(await server.metrics()) if server else {}
        started = time.monotonic()
        await asyncio.sleep(self.cfg.idle_window_s)
        elapsed = time.monotonic() - started
        m1 = parse_metrics(await server.metrics()) if server else {}
        await asyncio.sleep(1.1)
        after = await db_stats(self.pg, name)
        xacts = (after.get("xact_commit", 0) - before.get("xact_commit", 0)) + (
            after.get("xact_rollback", 0) - before.get("xact_rollback", 0)
        )
        out: Json = {"db_xacts_per_s": round(xacts / (elapsed + 1.1), 2)}
        if server:
            out["polls_per_s"] = round((poll_requests(m1) - poll_requests(m0)) / elapsed, 2)
        return out

    async def latency_peer(self, system: str, rate: int) -> Json:
        cfg = self.cfg
        name = await self.pg.create(f"latency_{system}_{rate}")
        dsn = self.pg.dsn(name)
        stamp_file = BENCH_DIR / f"stamps-{name}.txt"
        worker: Proc | None = None
        try:
            peer("install", system, dsn)
            worker = peer_worker(f"{system}-{name}", system, dsn, "--stamp-file", str(stamp_file))
            await asyncio.sleep(3.0)
            idle = await self.idle_window(name, None)
            answer = await asyncio.to_thread(
                peer,
                "latency",
                system,
                dsn,
                "--rate",
                str(rate),
                "--seconds",
                str(cfg.latency_seconds),
                "--clients",
                "16",
            )
            expected = int(answer.get("n", 0))

            async def finished() -> bool:
                return len(read_stamps(stamp_file)) >= expected

            await wait_until(finished, cfg.latency_drain_wait_s, 0.2)
            handler = read_stamps(stamp_file)
            return {
                "system": system,
                "rate": rate,
                "submitted": expected,
                "handler_started": len(handler),
                "submit_to_handler_ms": dist(handler),
                "submit_call_ms": {
                    "p50": answer.get("submit_p50_ms"),
                    "p95": answer.get("submit_p95_ms"),
                },
                "schedule_behind_max_ms": answer.get("schedule_behind_max_ms"),
                "idle": idle,
            }
        finally:
            if worker is not None:
                worker.stop()
            await self.pg.drop(name)
            with contextlib.suppress(OSError):
                stamp_file.unlink()

    async def workload_latency(self) -> None:
        cfg = self.cfg
        systems = ["oris"] + (["pgqueuer", "procrastinate"] if cfg.peers else [])
        runs: dict[str, list[Json]] = {}
        for run in range(cfg.runs):
            for rate in cfg.latency_rates:
                # Past what one API process accepts, also two `oris serve` replicas.
                extra = ["oris-2api"] if rate >= LATENCY_REPLICAS_FROM_RATE else []
                for system in [*systems, *extra]:
                    key = f"{system}@{rate}"
                    log(f"latency run {run + 1}/{cfg.runs}: {key}")
                    try:
                        if system == "oris":
                            result = await self.latency_oris(rate, run)
                        elif system == "oris-2api":
                            result = await self.latency_oris(rate, run, replicas=2)
                        else:
                            result = await self.latency_peer(system, rate)
                    except Exception as error:
                        result = {"system": system, "rate": rate, "error": repr(error)}
                    handler = result.get("submit_to_handler_ms", {})
                    log(
                        f"  -> handler p50 {fmt(handler.get('p50'))} p95 "
                        f"{fmt(handler.get('p95'))} ms"
                    )
                    runs.setdefault(key, []).append(result)
        out: Json = {}
        for key, rs in runs.items():
            out[key] = {
                "handler_p50_ms": summary(
                    [r.get("submit_to_handler_ms", {}).get("p50") for r in rs]
                ),
                "handler_p95_ms": summary(
                    [r.get("submit_to_handler_ms", {}).get("p95") for r in rs]
                ),
                "handler_p99_ms": summary(
                    [r.get("submit_to_handler_ms", {}).get("p99") for r in rs]
                ),
                "runs": rs,
            }
            if key.startswith("oris"):
                out[key]["achieved_submit_rate"] = summary(
                    [r.get("achieved_submit_rate") for r in rs]
                )
                out[key]["lease_p50_ms"] = summary(
                    [r.get("submit_to_lease_ms", {}).get("p50") for r in rs]
                )
                out[key]["lease_p95_ms"] = summary(
                    [r.get("submit_to_lease_ms", {}).get("p95") for r in rs]
                )
                out[key]["poll_to_dispatch_p95_ms"] = summary(
                    [r.get("poll_to_dispatch_ms", {}).get("p95") for r in rs]
                )
                out[key]["poll_to_dispatch_mean_ms"] = summary(
                    [r.get("poll_to_dispatch_ms", {}).get("mean") for r in rs]
                )
            out[key]["idle_db_xacts_per_s"] = summary(
                [r.get("idle", {}).get("db_xacts_per_s") for r in rs]
            )
            out[key]["idle_polls_per_s"] = summary(
                [r.get("idle", {}).get("polls_per_s") for r in rs]
            )
        self.results["latency"] = out

    # ------------------------------------------------------------------ API hot paths

    async def workload_api(self) -> None:
        cfg = self.cfg
        runs: dict[str, list[Json]] = collections.defaultdict(list)
        for run in range(cfg.runs):
            log(f"api hot paths run {run + 1}/{cfg.runs}")
            try:
                for op, result in (await self.api_once(run)).items():
                    runs[op].append(result)
            except Exception as error:
                runs["error"].append({"error": repr(error)})
        self.results["api"] = {
            op: {
                "ops_per_s": summary([r.get("ops_per_s") for r in rs]),
                "p95_ms": summary([r.get("p95_ms") for r in rs]),
                "server_cpu_ms_per_op": summary([r.get("server_cpu_ms_per_op") for r in rs]),
                "runs": rs,
            }
            for op, rs in runs.items()
        }

    async def api_once(self, run: int) -> dict[str, Json]:
        cfg = self.cfg
        name = await self.pg.create("api")
        dsn = self.pg.dsn(name)
        server: Server | None = None
        worker: Proc | None = None
        try:
            oris_upgrade(dsn)
            conn = await self.pg.connect(name)
            prefix = f"api-{run}-"
            await seed_oris(conn, cfg.api_jobs, prefix)
            await conn.execute("VACUUM ANALYZE")
            server = Server(f"serve-{name}", dsn, ORIS_MAX_ACTIVE_LEASES_PER_WORKER=1000)
            await server.ready()
            worker = start_worker(f"worker-{name}", server, dsn, cfg.worker_concurrency)

            async def finished() -> bool:
                done, _ = await oris_progress(conn)
                return done >= cfg.api_jobs

            await wait_until(finished, cfg.drain_timeout_s, 0.25)
            worker.stop()
            worker = None
            threads = [f"{prefix}{i}" for i in range(1, cfg.api_jobs + 1)]
            from oris.client import OrisClient
            from oris.config import ClientSettings

            out: dict[str, Json] = {}

            async def metered(op: str, loop: Awaitable[Json]) -> None:
                """Run one op's loop and charge the server's CPU time to its calls."""
                meter = CpuMeter(name, {"serve": server.pid})
                result = await loop
                cpu = meter.stop()
                result["server_cpu_ms_per_op"] = (
                    1000 * cpu["cpu_s"]["serve"] / max(result["ops"], 1)
                )
                out[op] = result

            async with OrisClient(ClientSettings(server_url=server.url)) as client:
                ops = cfg.api_ops
                k = cfg.api_clients
                await metered(
                    "inspect",
                    closed_loop(
                        [
                            lambda t=random.choice(threads): client.inspect_job(t)
                            for _ in range(ops)
                        ],
                        k,
                    ),
                )
                await metered(
                    "list", closed_loop([lambda: client.list_jobs(limit=50) for _ in range(ops)], k)
                )
                # Nothing to dispatch for this workflow: the claim runs and finds nothing.
                await metered(
                    "empty_poll",
                    closed_loop(
                        [
                            lambda i=i: client.poll(f"bench-empty-{i % k}", workflows=["none"])
                            for i in range(ops)
                        ],
                        k,
                    ),
                )
                targets = random.sample(threads, min(ops, len(threads)))
                await metered(
                    "replay", closed_loop([lambda t=t: client.replay_job(t) for t in targets], k)
                )
                leases: list[str] = []
                for _ in range(20):
                    data = await client.poll(
                        "bench-hb", limit=100, max_active_leases=1000, workflows=["echo"]
                    )
                    leases += [d["lease_id"] for d in data.get("dispatches") or []]
                    if len(leases) >= 4 * k or data.get("decision") != "dispatched":
                        break
                if leases:
                    groups = [leases[i::k] for i in range(k)]
                    await metered("heartbeat", closed_loop_grouped(client, "bench-hb", groups, ops))
            return out
        finally:
            if worker is not None:
                worker.stop()
            if server is not None:
                server.stop()
            await self.pg.drop(name)

    # ------------------------------------------------------------------ recovery

    async def workload_recovery(self) -> None:
        settings = {
            "ORIS_LEASE_TTL_SECONDS": 2,
            "ORIS_LEASE_GRACE_SECONDS": 1,
            "ORIS_MAINTENANCE_INTERVAL_SECONDS": 0.2,
        }
        out: Json = {"settings": settings, "bound_ms": (1 + 0.2 + 0.5) * 1000}
        for label, worker_extra in (
            ("default_worker", {}),
            ("eager_worker", {"ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS": 0.1}),
        ):
            log(f"recovery after forced lease expiry: {label}")
            try:
                out[f"expiry_{label}"] = await self.recovery_expiry(settings, worker_extra)
            except Exception as error:
                out[f"expiry_{label}"] = {"error": repr(error)}
        log("recovery after kill -9")
        try:
            out["kill9"] = await self.recovery_kill(settings)
        except Exception as error:
            out["kill9"] = {"error": repr(error)}
        self.results["recovery"] = out

    @contextlib.asynccontextmanager
    async def served(
        self, label: str, **settings: Any
    ) -> AsyncIterator[tuple[str, str, Server, asyncpg.Connection, Any]]:
        """A fresh database with ``oris serve`` on it, a connection and a client; all removed
        afterwards. Yields (database name, DSN, server, connection, client)."""
        from oris.client import OrisClient
        from oris.config import ClientSettings

        name = await self.pg.create(label)
        dsn = self.pg.dsn(name)
        server = Server(f"serve-{name}", dsn, **settings)
        try:
            await server.ready()
            conn = await self.pg.connect(name)
            try:
                async with OrisClient(ClientSettings(server_url=server.url)) as client:
                    yield name, dsn, server, conn, client
            finally:
                await conn.close()
        finally:
            server.stop()
            await self.pg.drop(name)

    async def recovery_expiry(self, settings: Json, worker_extra: Json) -> Json:
        cfg = self.cfg
        samples: list[Json] = []
        async with self.served("recovery", **settings) as (name, dsn, server, conn, client):
            for round_no in range(cfg.recovery_rounds):
                ghost = f"bench-ghost-{round_no}"
                threads = [f"rec-{round_no}-{i}" for i in range(cfg.recovery_jobs_per_round)]
                for thread in threads:
                    await client.run_job(thread, {"round": round_no})
                for _ in threads:  # staggered, so the leases expire at different moments
                    await client.poll(ghost, limit=1, workflows=["echo"])
                    await asyncio.sleep(0.3)
                worker = start_worker(f"worker-{name}-{round_no}", server, dsn, 4, **worker_extra)
                try:

                    async def finished(threads: list[str] = threads) -> bool:
                        done = await conn.fetchval(
                            "SELECT count(*) FROM runtime_jobs WHERE status = 'completed' "
                            "AND thread_id = ANY($1::text[])",
                            threads,
                        )
                        return int(done) >= len(threads)

                    await wait_until(finished, 60.0, 0.1)
                finally:
                    worker.stop()
                rows = await conn.fetch(
                    """SELECT l.attempt_id, l.lease_expires_at_ms AS expired_at,
                              (SELECT min(created_at_ms) FROM runtime_timeline_events e
                                WHERE e.attempt_id = l.attempt_id
                                  AND e.event_type = 'lease_expired') AS requeued_at,
                              (SELECT min(created_at_ms) FROM runtime_timeline_events e
                                WHERE e.attempt_id = l.attempt_id
                                  AND e.event_type = 'attempt_recovered') AS redispatched_at
                       FROM runtime_leases l WHERE l.worker_id = $1""",
                    ghost,
                )
                for row in rows:
                    if row["redispatched_at"] is None:
                        samples.append({"attempt_id": row["attempt_id"], "recovered": False})
                        continue
                    samples.append(
                        {
                            "expiry_to_redispatch_ms": row["redispatched_at"] - row["expired_at"],
                            "expiry_to_requeue_ms": (row["requeued_at"] or 0) - row["expired_at"],
                            "requeue_to_redispatch_ms": row["redispatched_at"]
                            - (row["requeued_at"] or 0),
                        }
                    )
            metrics = parse_metrics(await server.metrics())
            good = [s for s in samples if "expiry_to_redispatch_ms" in s]
            return {
                "samples": len(samples),
                "recovered": len(good),
                "expiry_to_redispatch_ms": dist([s["expiry_to_redispatch_ms"] for s in good]),
                "expiry_to_requeue_ms": dist([s["expiry_to_requeue_ms"] for s in good]),
                "requeue_to_redispatch_ms": dist([s["requeue_to_redispatch_ms"] for s in good]),
                "server_histogram": histogram_summary(
                    histogram(metrics, "oris_runtime_recovery_latency_ms")
                ),
                "worker_settings": worker_extra,
            }

    async def recovery_kill(self, settings: Json) -> Json:
        cfg = self.cfg
        samples: list[Json] = []
        async with self.served("kill9", **settings) as (name, dsn, server, conn, client):
            for sample in range(cfg.kill_samples):
                first = start_worker(f"worker-{name}-a{sample}", server, dsn, 1)
                second: Proc | None = None
                thread = f"kill-{sample}"
                try:
                    await client.run_job(thread, {"ms": 60_000}, workflow="sleep")

                    async def leased_by(worker_id: str, thread: str = thread) -> bool:
                        found = await conn.fetchval(
                            "SELECT count(*) FROM runtime_leases l JOIN runtime_attempts a "
                            "USING (attempt_id) WHERE a.run_id = $1 AND l.worker_id = $2",
                            thread,
                            worker_id,
                        )
                        return int(found) > 0

                    id_a, id_b = f"worker-{name}-a{sample}", f"worker-{name}-b{sample}"
                    await wait_until(functools.partial(leased_by, id_a), 30.0, 0.05)
                    second = start_worker(id_b, server, dsn, 1)
                    await asyncio.sleep(2.0)  # B is idle-polling by now
                    killed_at = time.time()
                    first.kill9()
                    await wait_until(functools.partial(leased_by, id_b), 30.0, 0.02)
                    row = await conn.fetchrow(
                        """SELECT (SELECT max(l.lease_expires_at_ms) FROM runtime_leases l
                                    JOIN runtime_attempts a USING (attempt_id)
                                   WHERE a.run_id = $1 AND l.worker_id = $2) AS expired_at,
                                  (SELECT min(l.acquired_at_ms) FROM runtime_leases l
                                    JOIN runtime_attempts a USING (attempt_id)
                                   WHERE a.run_id = $1 AND l.worker_id = $3) AS redispatched_at
                        """,
                        thread,
                        f"worker-{name}-a{sample}",
                        f"worker-{name}-b{sample}",
                    )
                    if row is not None and row["redispatched_at"] is not None:
                        samples.append(
                            {
                                "kill_to_redispatch_ms": row["redispatched_at"] - killed_at * 1000,
                                "kill_to_lease_expiry_ms": row["expired_at"] - killed_at * 1000,
                            }
                        )
                    with contextlib.suppress(Exception):
                        await client.cancel_job(thread, "benchmark sample done")
                finally:
                    if first.alive():
                        first.stop()
                    if second is not None:
                        second.stop()
            return {
                "samples": len(samples),
                "kill_to_redispatch_ms": dist([s["kill_to_redispatch_ms"] for s in samples]),
                "kill_to_lease_expiry_ms": dist([s["kill_to_lease_expiry_ms"] for s in samples]),
                "raw": samples,
            }

    # ------------------------------------------------------------------ depth

    async def workload_depth(self) -> None:
        cfg = self.cfg
        name = await self.pg.create("depth")
        dsn = self.pg.dsn(name)
        server: Server | None = None
        out: Json = {"rows": cfg.depth_rows}
        try:
            oris_upgrade(dsn)
            conn = await self.pg.connect(name)
            log(f"depth: inserting {cfg.depth_rows:,} queued attempts")
            started = time.monotonic()
            await seed_oris(conn, cfg.depth_rows, "depth-", history=False)
            await conn.execute("VACUUM ANALYZE")
            out["seed_seconds"] = round(time.monotonic() - started, 1)
            server = Server(f"serve-{name}", dsn, ORIS_MAX_ACTIVE_LEASES_PER_WORKER=1000)
            await server.ready()
            scans0 = await table_scans(conn)
            from oris.client import OrisClient
            from oris.config import ClientSettings

            async with OrisClient(ClientSettings(server_url=server.url)) as client:
                polls: list[float] = []
                acks: list[float] = []
                for index in range(cfg.depth_polls + 10):
                    t0 = time.perf_counter()
                    data = await client.poll("depth-w", limit=1, workflows=["echo"])
                    elapsed = (time.perf_counter() - t0) * 1000
                    item = (data.get("dispatches") or [None])[0]
                    if index >= 10:
                        polls.append(elapsed)
                    if item is not None:
                        t1 = time.perf_counter()
                        await client.ack(
                            "depth-w",
                            attempt_id=item["attempt_id"],
                            lease_id=item["lease_id"],
                            terminal_status="completed",
                            output={"ok": True},
                        )
                        acks.append((time.perf_counter() - t1) * 1000)
                scrapes: list[float] = []
                for _ in range(cfg.depth_scrapes):
                    t0 = time.perf_counter()
                    response = await client.raw("GET", "/metrics")
                    scrapes.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                submits: list[float] = []
                for index in range(cfg.depth_submits):
                    t0 = time.perf_counter()
                    await client.run_job(f"depth-submit-{index}", {"i": index})
                    submits.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(1.2)
            scans1 = await table_scans(conn)
            out["poll_claim_ms"] = dist(polls)
            out["ack_ms"] = dist(acks)
            out["metrics_scrape_ms"] = dist(scrapes)
            out["submit_ms"] = dist(submits)
            out["seq_scans_during_http"] = {
                table: scans1[table]["seq_scan"] - scans0.get(table, {}).get("seq_scan", 0)
                for table in scans1
            }
            log("depth: EXPLAIN (ANALYZE, BUFFERS) of the claim and the /metrics queries")
            out["explain"] = await explain_depth(dsn, conn)
            await conn.close()
            seq = [
                p["label"]
                for p in out["explain"].get("plans", [])
                if "Seq Scan on runtime_attempts" in p.get("plan", "")
            ]
            out["plans_with_seq_scan_on_runtime_attempts"] = seq
            out["generic_plans_with_seq_scan"] = [
                p["label"]
                for p in out["explain"].get("plans", [])
                if "Seq Scan on runtime_" in p.get("generic_plan", "")
            ]
        finally:
            if server is not None:
                server.stop()
            await self.pg.drop(name)
        self.results["depth"] = out

    # ------------------------------------------------------------------ census

    async def workload_census(self) -> None:
        """Statements and commits per operation, counted in-process on the real service code."""
        name = await self.pg.create("census")
        try:
            self.results["census"] = await census(self.pg.dsn(name))
        except Exception as error:
            self.results["census"] = {"error": repr(error)}
        finally:
            await self.pg.drop(name)


def _wait_proc(proc: Proc, timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=timeout)


def achieved_rate(times: list[float]) -> float | None:
    """Submissions per second actually sent (the offered rate when the client kept up)."""
    if len(times) < 2 or max(times) == min(times):
        return None
    return (len(times) - 1) / (max(times) - min(times))


def read_stamps(path: Path) -> list[float]:
    """Latencies (ms) from a stamps file: ``t_submit t_start [...]`` per line."""
    out: list[float] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 2:
            with contextlib.suppress(ValueError):
                out.append((float(parts[1]) - float(parts[0])) * 1000)
    return out


async def table_scans(conn: asyncpg.Connection) -> dict[str, Json]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT relname, seq_scan, seq_tup_read, idx_scan FROM pg_stat_user_tables "
        "WHERE schemaname = $1 AND relname LIKE 'runtime_%'",
        SCHEMA,
    )
    return {
        r["relname"]: {k: r[k] or 0 for k in ("seq_scan", "seq_tup_read", "idx_scan")} for r in rows
    }


def scans_delta(before: dict[str, Json], after: dict[str, Json], per: int) -> Json:
    """Per table: sequential scans, rows they read, index scans; per job when ``per``."""
    out: Json = {}
    for table, counts in sorted(after.items()):
        delta = {k: v - before.get(table, {}).get(k, 0) for k, v in counts.items()}
        if any(delta.values()):
            out[table] = {k: round(v / per, 2) if per else v for k, v in delta.items()}
    return out


# --------------------------------------------------------------------------- HTTP load helpers


async def poll_ack_loop(url: str, worker_id: str) -> int:
    """The minimal protocol client: poll limit=1 → ack, one at a time, until the queue is empty."""
    from oris.client import OrisClient
    from oris.config import ClientSettings

    done = 0
    empty = 0
    async with OrisClient(ClientSettings(server_url=url)) as client:
        while empty < 50:
            data = await client.poll(worker_id, limit=1, workflows=["echo"])
            items = data.get("dispatches") or []
            if not items:
                empty += 1
                await asyncio.sleep(0.1)
                continue
            empty = 0
            for item in items:
                await client.ack(
                    worker_id,
                    attempt_id=item["attempt_id"],
                    lease_id=item["lease_id"],
                    terminal_status="completed",
                    output={"output": item.get("input")},
                )
                done += 1
    return done


async def closed_loop(calls: list[Callable[[], Awaitable[Any]]], clients: int) -> Json:
    latencies: list[float] = []
    errors = 0
    queue: collections.deque[Callable[[], Awaitable[Any]]] = collections.deque(calls)

    async def caller() -> None:
        nonlocal errors
        while queue:
            call = queue.popleft()
            t0 = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "ops": len(calls),
        "errors": errors,
        "seconds": elapsed,
        "ops_per_s": len(calls) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }


async def closed_loop_grouped(
    client: Any, worker_id: str, groups: list[list[str]], ops: int
) -> Json:
    """Heartbeats: each caller cycles over its own leases (no two callers share a lease)."""
    per_caller = max(ops // max(len([g for g in groups if g]), 1), 1)
    latencies: list[float] = []
    errors = 0

    async def caller(leases: list[str]) -> None:
        nonlocal errors
        for index in range(per_caller):
            t0 = time.perf_counter()
            try:
                await client.heartbeat(worker_id, leases[index % len(leases)])
            except Exception:
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(g) for g in groups if g))
    elapsed = time.perf_counter() - started
    return {
        "ops": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "leases": sum(len(g) for g in groups),
    }


async def submit_run(client: LoadClient, body: Json) -> None:
    """``POST /v1/jobs/run`` through the lean load generator; raises unless the job queued."""
    status, answer = await client.post_json("/v1/jobs/run", body)
    if status != 200 or answer.get("data", {}).get("status") != "queued":
        raise RuntimeError(f"run answered {status}: {str(answer)[:200]}")


async def closed_loop_submit(url: str, n: int, clients: int, run: int) -> Json:
    async with LoadClient(url) as client:
        calls = [
            lambda i=i: submit_run(client, {"thread_id": f"submit-{run}-{i}", "input": {"i": i}})
            for i in range(n)
        ]
        cpu_started = time.process_time()
        result = await closed_loop(calls, clients)
        client_cpu = time.process_time() - cpu_started
    return {
        "n": n,
        "clients": clients,
        "jobs_per_s": result["ops_per_s"],
        "seconds": result["seconds"],
        "p50_ms": result["p50_ms"],
        "p95_ms": result["p95_ms"],
        "errors": result["errors"],
        "client_cpu_ms_per_job": 1000 * client_cpu / max(n, 1),
    }


async def open_loop_submit(
    urls: list[str], rate: int, seconds: float, prefix: str
) -> tuple[dict[str, float], list[float], list[float]]:
    """Submit ``rate`` jobs per second for ``seconds``, round-robin over ``urls``; returns
    thread → submit time (epoch s)."""
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    behind: list[float] = []
    limiter = asyncio.Semaphore(64)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(LoadClient(url)) for url in urls]

        async def one(index: int) -> None:
            thread = f"{prefix}{index}"
            async with limiter:
                t_submit = time.time()
                t0 = time.perf_counter()
                await submit_run(
                    clients[index % len(clients)],
                    {"thread_id": thread, "input": {"t": t_submit}, "workflow": "bench_stamp"},
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                submitted[thread] = t_submit

        tasks = []
        started = time.perf_counter()
        for index in range(int(rate * seconds)):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind.append(-delay * 1000)
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks, return_exceptions=True)
    return submitted, latencies, behind


# --------------------------------------------------------------------------- in-process SQL census


@contextlib.contextmanager
def capture_sql(engine: Any) -> Iterator[Json]:
    """Record every statement (with its parameters) and every commit on an engine."""
    from sqlalchemy import event

    seen: Json = {"statements": [], "commits": 0}

    def on_execute(
        conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: Any
    ) -> None:
        seen["statements"].append((statement, params))

    def on_commit(conn: Any) -> None:
        seen["commits"] += 1

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_commit)


def _statement_kind(statement: str) -> str:
    text = " ".join(statement.split())
    match = re.match(r"(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s+(.*)", text, re.I)
    if not match:
        return text[:60]
    verb = match.group(1).upper()
    table = re.search(r"\b(runtime_\w+|pg_\w+)", text)
    what = table.group(1) if table else match.group(2)[:40]
    if verb == "SELECT" and "FOR UPDATE" in text:
        verb = "SELECT … FOR UPDATE"
    if verb == "SELECT" and "count(" in text.lower():
        verb = "SELECT count"
    return f"{verb} {what}"


async def census(dsn: str) -> Json:
    """Statements and commits per run / poll / ack / heartbeat / scrape, on the service code."""
    from oris.config import load_server_settings
    from oris.observability.metrics import RuntimeMetrics
    from oris.services import health, scheduler
    from oris.services import jobs as job_service
    from oris.services.bootstrap import open_database, upgrade_schema
    from oris.services.context import RequestContext
    from oris.services.runtime import Runtime

    settings = load_server_settings(
        runtime_backend="postgres",
        postgres_dsn=dsn,
        postgres_require_schema=False,
        max_active_leases_per_worker=1000,
    )
    database = open_database(settings)
    await upgrade_schema(database)
    rt = Runtime(db=database, settings=settings, metrics=RuntimeMetrics())
    out: Json = {}

    async def measure(label: str, repeat: int, call: Callable[[int], Awaitable[Any]]) -> list[Any]:
        results = []
        with capture_sql(database.engine) as seen:
            started = time.perf_counter()
            for index in range(repeat):
                results.append(await call(index))
            elapsed = time.perf_counter() - started
        kinds = collections.Counter(_statement_kind(s) for s, _ in seen["statements"])
        out[label] = {
            "repeat": repeat,
            "statements_per_op": round(len(seen["statements"]) / repeat, 2),
            "commits_per_op": round(seen["commits"] / repeat, 2),
            "ms_per_op_in_process": round(elapsed * 1000 / repeat, 2),
            "statements": {k: round(v / repeat, 2) for k, v in kinds.most_common()},
        }
        return results

    try:
        ctx = RequestContext(request_id="bench-census")
        # warm the prepared-statement caches first, so later counts are steady state
        await job_service.run(database, ctx, job_service.RunCommand(thread_id="warm-0"))
        await measure(
            "run",
            20,
            lambda i: job_service.run(
                database, ctx, job_service.RunCommand(thread_id=f"census-{i}", input={"i": i})
            ),
        )
        polled = await measure(
            "poll_limit1_dispatch",
            10,
            lambda i: scheduler.poll(
                rt, scheduler.PollCommand(worker_id="census-w", limit=1, workflows=["echo"])
            ),
        )
        items = [p["dispatches"][0] for p in polled if p.get("dispatches")]
        if items:
            await measure(
                "heartbeat",
                len(items),
                lambda i: scheduler.heartbeat(rt, "census-w", items[i]["lease_id"], None),
            )
            await measure(
                "ack_completed",
                len(items),
                lambda i: scheduler.ack(
                    rt,
                    "census-w",
                    scheduler.AckCommand(
                        attempt_id=items[i]["attempt_id"],
                        terminal_status="completed",
                        lease_id=items[i]["lease_id"],
                        output={"output": items[i].get("input")},
                    ),
                ),
            )
        batch = await measure(
            "poll_limit10_dispatch",
            1,
            lambda i: scheduler.poll(
                rt, scheduler.PollCommand(worker_id="census-w", limit=10, workflows=["echo"])
            ),
        )
        dispatched = len(batch[0].get("dispatches") or [])
        out["poll_limit10_dispatch"]["dispatched"] = dispatched
        await measure(
            "poll_empty_noop",
            10,
            lambda i: scheduler.poll(
                rt, scheduler.PollCommand(worker_id="census-w", limit=1, workflows=["nothing"])
            ),
        )
        await measure("metrics_gauges", 3, lambda i: health.database_gauges(rt))
        out["round_trip_costs"] = await round_trip_costs(dsn, database)
    finally:
        await database.dispose()
    return out


async def round_trip_costs(dsn: str, database: Any, repeat: int = 500) -> Json:
    """Wall and CPU (this process) per call: raw asyncpg vs the same read through SQLAlchemy.

    Separates what PostgreSQL and the loopback cost (``SELECT 1``, a durable commit) from what
    the Python layers add per statement.
    """
    from sqlalchemy import select

    from oris.store.tables import jobs

    out: Json = {}

    async def timed(label: str, call: Callable[[int], Awaitable[Any]]) -> None:
        for index in range(20):
            await call(index)
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(repeat):
            await call(index)
        out[label] = {
            "wall_ms": round((time.perf_counter() - wall) * 1000 / repeat, 4),
            "cpu_ms": round((time.process_time() - cpu) * 1000 / repeat, 4),
        }

    raw = await asyncpg.connect(dsn, server_settings={"search_path": SCHEMA})
    try:
        await raw.execute("CREATE TEMP TABLE IF NOT EXISTS bench_commit (v int)")
        await raw.execute("CREATE TABLE IF NOT EXISTS public.bench_commit_durable (v int)")
        await timed("asyncpg SELECT 1", lambda i: raw.fetchval("SELECT 1"))
        await timed(
            "asyncpg job by primary key",
            lambda i: raw.fetchrow("SELECT * FROM runtime_jobs WHERE thread_id = $1", f"x{i}"),
        )

        async def commit(index: int) -> None:
            async with raw.transaction():
                await raw.execute("INSERT INTO public.bench_commit_durable VALUES ($1)", index)

        await timed("asyncpg durable commit (1-row insert)", commit)
    finally:
        await raw.close()
    async with database.engine.connect() as conn:
        await timed(
            "sqlalchemy job by primary key",
            lambda i: conn.execute(select(jobs).where(jobs.c.thread_id == f"x{i}")),
        )

    async def transaction(index: int) -> None:
        async with database.read() as conn:
            await conn.execute(select(jobs).where(jobs.c.thread_id == f"x{index}"))

    await timed("oris Database.read() + one select", transaction)
    return out


async def explain_depth(dsn: str, conn: asyncpg.Connection) -> Json:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the claim and the gauges really send.

    The statements are captured from the service code itself (SQLAlchemy's
    ``before_cursor_execute``), then explained with the same parameters on a plain connection.
    The claim is also explained under ``plan_cache_mode = force_generic_plan``: after five
    executions of a prepared statement PostgreSQL may switch to a generic plan, which cannot
    prove the partial dispatch index's predicate from ``status IN ($1, $2)``.
    """
    from oris.config import load_server_settings
    from oris.observability.metrics import RuntimeMetrics
    from oris.services import health
    from oris.services.bootstrap import open_database
    from oris.services.runtime import Runtime
    from oris.store import dispatch as dispatch_store
    from oris.store import leases as lease_store

    settings = load_server_settings(
        runtime_backend="postgres", postgres_dsn=dsn, postgres_require_schema=False
    )
    database = open_database(settings)
    rt = Runtime(db=database, settings=settings, metrics=RuntimeMetrics())
    captured: list[tuple[str, str, Any]] = []
    try:
        with capture_sql(database.engine) as seen:
            async with database.write() as sa_conn:
                await dispatch_store.claim_candidates(
                    sa_conn, now_ms=now_ms(), limit=1, workflows=["echo"], excluded_tenants=set()
                )
        captured += [("claim", s, p) for s, p in seen["statements"]]
        with capture_sql(database.engine) as seen:
            await health.database_gauges(rt)
        captured += [(f"metrics: {_statement_kind(s)}", s, p) for s, p in seen["statements"]]
        with capture_sql(database.engine) as seen:
            async with database.write() as sa_conn:
                now = now_ms()
                await lease_store.active_counts(sa_conn, "depth-w", now)
                await lease_store.active_for_attempt(sa_conn, "attempt-none")
                await lease_store.lock_active_for_attempts(sa_conn, ["attempt-none"])
                await lease_store.claim_expired(sa_conn, expired_before_ms=now, limit=500)
        captured += [(f"leases: {_statement_kind(s)}", s, p) for s, p in seen["statements"]]
    finally:
        await database.dispose()
    plans = []
    for label, statement, params in captured:
        args = list(params) if isinstance(params, list | tuple) else []
        entry: Json = {"label": label, "sql": " ".join(statement.split())}
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *args)
                entry["plan"] = "\n".join(r[0] for r in rows)
                match = re.search(r"Execution Time: ([\d.]+) ms", entry["plan"])
                entry["execution_ms"] = float(match.group(1)) if match else None
                # What a cached prepared statement may end up with (asyncpg prepares every
                # statement; PostgreSQL may switch to the generic plan after 5 executions).
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE bench_q AS {statement}")
                literal = ", ".join(sql_literal(a) for a in args)
                execute = f"EXECUTE bench_q({literal})" if args else "EXECUTE bench_q"
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")
                entry["generic_plan"] = "\n".join(r[0] for r in rows)
                match = re.search(r"Execution Time: ([\d.]+) ms", entry["generic_plan"])
                entry["generic_execution_ms"] = float(match.group(1)) if match else None
                await conn.execute("DEALLOCATE bench_q")
            finally:
                await transaction.rollback()
        except Exception as error:
            entry["error"] = repr(error)
        plans.append(entry)
    return {"plans": plans}


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


# --------------------------------------------------------------------------- report


def ratio(ours: Any, theirs: Any) -> float | None:
    if ours is None or theirs in (None, 0):
        return None
    return float(ours) / float(theirs)


def med(results: Json, *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, dict):
        value = node.get("median")
        return None if value is None else float(value)
    return None if node is None else float(node)


def evaluate_targets(results: Json) -> list[Json]:
    targets: list[Json] = []

    def add(name: str, value: Any, bound: str, met: bool | None, evidence: str) -> None:
        targets.append(
            {"target": name, "measured": value, "bound": bound, "met": met, "evidence": evidence}
        )

    r = ratio(
        med(results, "drain", "oris", "jobs_per_s"), med(results, "drain", "pgqueuer", "jobs_per_s")
    )
    add(
        "drain over HTTP ≥ 1.5x pgqueuer",
        r,
        "≥ 1.5",
        None if r is None else r >= 1.5,
        "drain.oris / drain.pgqueuer (medians)",
    )
    r = ratio(
        med(results, "drain", "oris-wide", "jobs_per_s"),
        med(results, "drain", "pgqueuer", "jobs_per_s"),
    )
    add(
        f"drain over HTTP ≥ 1.5x pgqueuer, worker concurrency {WIDE_CONCURRENCY}",
        r,
        "≥ 1.5",
        None if r is None else r >= 1.5,
        f"drain.oris-wide (oris worker --concurrency {WIDE_CONCURRENCY}, server cap "
        f"{WIDE_CONCURRENCY}) / drain.pgqueuer (medians)",
    )
    r = ratio(
        med(results, "drain", "oris-limit1", "jobs_per_s"),
        med(results, "drain", "procrastinate", "jobs_per_s"),
    )
    add(
        "drain with limit=1 polls ≥ 2x procrastinate",
        r,
        "≥ 2",
        None if r is None else r >= 2,
        "drain.oris-limit1 (oris worker, concurrency 1 → polls limit=1) / drain.procrastinate",
    )
    p50 = med(results, "latency", "oris@50", "handler_p50_ms")
    p95 = med(results, "latency", "oris@50", "handler_p95_ms")
    idle = med(results, "latency", "oris@50", "idle_polls_per_s")
    met = None if p50 is None or p95 is None else (p50 <= 10 and p95 <= 25)
    add(
        "submit→handler start at 50/s: p50 ≤ 10 ms, p95 ≤ 25 ms",
        [p50, p95],
        "10 / 25 ms",
        met,
        f"latency.oris@50 handler stamps; idle worker polls/s = {idle}",
    )
    for key, label in (("oris@500", ""), ("oris-2api@500", ", two API replicas")):
        p95d = med(results, "latency", key, "poll_to_dispatch_p95_ms")
        add(
            f"poll→dispatch p95 ≤ 20 ms at 500/s{label}",
            p95d,
            "≤ 20 ms",
            None if p95d is None else p95d <= 20,
            "server histogram oris_runtime_dispatch_latency_ms (bucket-interpolated)",
        )
    rec = results.get("recovery", {}).get("expiry_default_worker", {})
    p95r = rec.get("expiry_to_redispatch_ms", {}).get("p95")
    add(
        "recovery after forced expiry p95 ≤ grace + interval + 0.5 s (1,700 ms)",
        p95r,
        "≤ 1,700 ms",
        None if p95r is None else p95r <= 1700,
        "timeline attempt_recovered - lease expiry, default oris worker",
    )
    depth = results.get("depth", {})
    claim = depth.get("poll_claim_ms", {}).get("p95")
    add(
        "claim p95 ≤ 10 ms at depth",
        claim,
        "≤ 10 ms",
        None if claim is None else claim <= 10,
        f"HTTP POST /v1/workers/poll limit=1 at {depth.get('rows')} queued",
    )
    scrape = depth.get("metrics_scrape_ms", {}).get("p50")
    add(
        "/metrics ≤ 100 ms at depth",
        scrape,
        "≤ 100 ms",
        None if scrape is None else scrape <= 100,
        "median scrape time",
    )
    seq = depth.get("plans_with_seq_scan_on_runtime_attempts")
    during = depth.get("seq_scans_during_http", {}).get("runtime_attempts")
    add(
        "no sequential scans at depth",
        {"plans": seq, "runtime_attempts_seq_scans": during},
        "none",
        None if seq is None else (not seq and not during),
        "EXPLAIN plans + pg_stat_user_tables.seq_scan delta during the HTTP phase",
    )
    return targets


def print_report(results: Json) -> None:
    lines: list[str] = []
    add = lines.append
    machine = results["machine"]
    add("")
    add(
        f"Oris benchmark — {machine['cpu_count']} CPUs, PostgreSQL {machine['postgres']['server_version']}, "
        f"Python {machine['python']}, commit {machine['git_commit'][:12]}"
        + (" (QUICK)" if results["config"]["quick"] else "")
    )

    def row(label: str, s: Json | None, unit: str = "", digits: int = 1) -> str:
        if not s or s.get("median") is None:
            return f"  {label:<38} —"
        return (
            f"  {label:<38} {fmt(s['median'], digits):>10} {unit:<6} "
            f"({fmt(s['min'], digits)}-{fmt(s['max'], digits)}, n={s['runs']})"
        )

    if "drain" in results:
        add("\nDrain (jobs/s, first dispatch → last ack, from the database)")
        for name, data in results["drain"].items():
            add(row(name, data["jobs_per_s"], "jobs/s"))
        for variant in ("oris", "oris-wide", "oris-2w"):
            ours = med(results, "drain", variant, "jobs_per_s")
            for peer_name in ("pgqueuer", "pgqueuer-b1", "procrastinate"):
                r = ratio(ours, med(results, "drain", peer_name, "jobs_per_s"))
                if r is not None:
                    add(f"  ratio {variant} / {peer_name:<19} {r:8.2f}x")
        r = ratio(
            med(results, "drain", "oris-limit1", "jobs_per_s"),
            med(results, "drain", "procrastinate", "jobs_per_s"),
        )
        if r is not None:
            add(f"  ratio oris-limit1 / procrastinate       {r:8.2f}x")
    if "submit" in results:
        add("\nSubmit (jobs/s, one job per call, concurrent clients)")
        for name, data in results["submit"].items():
            add(row(name, data["jobs_per_s"], "jobs/s"))
            if name == "oris" and "server_cpu_ms_per_job" in data:
                add(row("oris server CPU per submit", data["server_cpu_ms_per_job"], "ms"))
            if name == "oris" and "client_cpu_ms_per_job" in data:
                add(row("load generator CPU per submit", data["client_cpu_ms_per_job"], "ms"))
        ours = med(results, "submit", "oris", "jobs_per_s")
        for peer_name in ("pgqueuer", "procrastinate"):
            r = ratio(ours, med(results, "submit", peer_name, "jobs_per_s"))
            if r is not None:
                add(f"  ratio oris / {peer_name:<24} {r:8.2f}x")
    if "latency" in results:
        add("\nLatency (submit → handler start, ms; lower is better)")
        for name, data in results["latency"].items():
            add(row(f"{name} p50", data["handler_p50_ms"], "ms"))
            add(row(f"{name} p95", data["handler_p95_ms"], "ms"))
            if "poll_to_dispatch_p95_ms" in data:
                add(row(f"{name} poll→dispatch p95", data["poll_to_dispatch_p95_ms"], "ms"))
            if "achieved_submit_rate" in data:
                add(row(f"{name} submits accepted", data["achieved_submit_rate"], "/s"))
            add(row(f"{name} idle DB xacts/s", data["idle_db_xacts_per_s"], "/s"))
    if "api" in results:
        add("\nAPI hot paths (ops/s, 16 clients; server CPU per call)")
        for name, data in results["api"].items():
            if "ops_per_s" not in data:
                continue
            add(row(name, data["ops_per_s"], "ops/s"))
            if "server_cpu_ms_per_op" in data:
                add(row(f"{name} server CPU", data["server_cpu_ms_per_op"], "ms"))
    if "recovery" in results:
        add("\nRecovery (ms)")
        for key in ("expiry_default_worker", "expiry_eager_worker"):
            data = results["recovery"].get(key, {})
            d = data.get("expiry_to_redispatch_ms", {})
            add(f"  {key:<38} p50 {fmt(d.get('p50'))}  p95 {fmt(d.get('p95'))}  n={d.get('n')}")
        d = results["recovery"].get("kill9", {}).get("kill_to_redispatch_ms", {})
        add(
            f"  {'kill -9 → re-dispatch':<38} p50 {fmt(d.get('p50'))}  max {fmt(d.get('max'))}  n={d.get('n')}"
        )
    if "depth" in results:
        depth = results["depth"]
        add(f"\nDepth ({fmt(depth.get('rows'))} queued)")
        for key in ("poll_claim_ms", "ack_ms", "metrics_scrape_ms", "submit_ms"):
            d = depth.get(key, {})
            add(
                f"  {key:<38} p50 {fmt(d.get('p50'))}  p95 {fmt(d.get('p95'))}  max {fmt(d.get('max'))}"
            )
        add(
            f"  seq scans on runtime_attempts in plans: {depth.get('plans_with_seq_scan_on_runtime_attempts')}"
        )
        add(f"  seq scans during HTTP phase: {depth.get('seq_scans_during_http')}")
    if "targets" in results:
        add("\nTargets")
        for t in results["targets"]:
            mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            add(f"  [{mark:^7}] {t['target']}: {t['measured']}")
    print("\n".join(lines), flush=True)


def machine_facts(pg_facts: Json) -> Json:
    try:
        commit = run_cmd(["git", "rev-parse", "HEAD"], cwd=ROOT).strip()
        dirty = bool(run_cmd(["git", "status", "--porcelain"], cwd=ROOT).strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    peers: Json = {}
    with contextlib.suppress(Exception):
        peers = json.loads(
            run_cmd(
                [
                    str(PEER_PY),
                    "-c",
                    "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) "
                    "for p in ('pgqueuer', 'procrastinate', 'psycopg', 'asyncpg', 'py-spy')}))",
                ]
            )
        )
    import importlib.metadata as md

    ours = {}
    for name in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx", "uvloop", "httptools"):
        try:
            ours[name] = md.version(name)
        except md.PackageNotFoundError:
            ours[name] = None
    import oris

    measured = {
        "ref": os.environ.get("BENCH_ORIS_REF") or "working tree",
        "ref_commit": os.environ.get("BENCH_ORIS_COMMIT") or commit,
        "oris_imported_from": str(Path(oris.__file__).parent),
        "python_executable": sys.executable,
    }
    return {
        "measured_code": measured,
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": pg_facts,
        "git_commit": commit,
        "git_dirty": dirty,
        "loadavg_at_start": os.getloadavg(),
        "peer_versions": peers,
        "oris_stack_versions": ours,
    }


async def amain(cfg: Config) -> Json:
    BENCH_DIR.mkdir(exist_ok=True)
    pg = Pg(cfg.pg_base)
    bench = Bench(cfg, pg)
    started = time.time()
    results: Json = {
        "machine": machine_facts(await pg.facts()),
        "config": asdict(cfg),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    bench.results = results
    order: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("census", bench.workload_census),
        ("drain", bench.workload_drain),
        ("profile", bench.workload_profile),
        ("latency", bench.workload_latency),
        ("depth", bench.workload_depth),
        ("submit", bench.workload_submit),
        ("api", bench.workload_api),
        ("recovery", bench.workload_recovery),
    ]
    out_path = BENCH_DIR / f"results-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    try:
        for name, workload in order:
            if not cfg.wants(name) or (name == "profile" and not cfg.profile):
                continue
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                await workload()
            except Exception as error:
                results[name] = {"error": repr(error)}
                log(f"{name} failed: {error!r}")
            results.setdefault("durations_s", {})[name] = round(time.monotonic() - t0, 1)
            out_path.write_text(json.dumps(results, indent=2, default=str))
    finally:
        await pg.drop_all()
    results["targets"] = evaluate_targets(results)
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    out_path.write_text(json.dumps(results, indent=2, default=str))
    print_report(results)
    print(f"\nresults: {out_path}", flush=True)
    print(f"measured: {results['machine']['measured_code']}", flush=True)
    return results


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description="Oris runtime benchmarks (see README.md)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 runs")
    parser.add_argument(
        "--only",
        default="",
        help="comma list of: census,drain,profile,submit,latency,api,recovery,depth",
    )
    parser.add_argument("--runs", type=int)
    parser.add_argument("--drain-jobs", type=int)
    parser.add_argument("--drain-limit1-jobs", type=int)
    parser.add_argument("--depth-rows", type=int)
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--concurrency", type=int, help="oris worker concurrency (default 8)")
    parser.add_argument(
        "--drain-variants",
        default="",
        help="subset of: oris,oris-limit1,oris-loop1,pgqueuer,pgqueuer-b1,procrastinate",
    )
    parser.add_argument("--latency-rates", help="comma list of jobs/s (default 50,500)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the API during a drain")
    parser.add_argument(
        "--pg", help="PostgreSQL base DSN (default postgresql://postgres@127.0.0.1:5432)"
    )
    args = parser.parse_args(argv)
    cfg = Config.quick_mode() if args.quick else Config()
    for attr, value in (
        ("runs", args.runs),
        ("drain_jobs", args.drain_jobs),
        ("drain_limit1_jobs", args.drain_limit1_jobs),
        ("depth_rows", args.depth_rows),
        ("latency_seconds", args.latency_seconds),
        ("worker_concurrency", args.concurrency),
        ("pg_base", args.pg),
    ):
        if value is not None:
            setattr(cfg, attr, value)
    cfg.only = [w for w in args.only.split(",") if w]
    cfg.drain_variants = [v for v in args.drain_variants.split(",") if v]
    if args.latency_rates:
        cfg.latency_rates = [int(r) for r in args.latency_rates.split(",") if r]
    cfg.peers = not args.no_peers
    cfg.profile = args.profile
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    asyncio.run(amain(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
