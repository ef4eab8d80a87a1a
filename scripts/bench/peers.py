"""Peer job queues (pgqueuer, procrastinate) driven the same way as Oris in ``bench.py``.

Runs in the dedicated bench venv (``.bench/venv``), never in the project's: the peers are not
project dependencies. ``bench.py`` calls one sub-command per step and reads the JSON line this
script prints on stdout. Timings that decide a figure are read from the peers' own tables by
``bench.py``; this script only installs, enqueues and runs workers.

Sub-commands::

    install  --system S --dsn D
    seed     --system S --dsn D --n N                   bulk enqueue (1,000 per call)
    worker   --system S --dsn D [--batch-size B] [--drain] [--stamp-file F]
    submit   --system S --dsn D --n N --clients K       one job per call, K concurrent callers
    latency  --system S --dsn D --rate R --seconds T    one job per call at a fixed rate

Handlers are no-ops; with ``--stamp-file`` the handler appends ``<t_submit> <t_start>`` (epoch
seconds, the submit time travels in the payload) so the driver can compute pickup latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TextIO

QUEUE = "bench"
TASK = "bench_noop"


class Stamper:
    """Appends handler start times to a file, flushed per line (survives SIGKILL/SIGTERM)."""

    def __init__(self, path: str | None) -> None:
        self._file: TextIO | None = None
        if path:
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def stamp(self, submitted: float | None) -> None:
        started = time.time()
        if self._file is not None and submitted is not None:
            self._file.write(f"{submitted:.6f} {started:.6f}\n")


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# ---------------------------------------------------------------- pgqueuer


async def pgq_install(dsn: str) -> None:
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(dsn)
    try:
        await Queries.from_asyncpg_connection(conn).install()
    finally:
        await conn.close()


async def pgq_seed(dsn: str, n: int) -> None:
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        done = 0
        while done < n:
            size = min(1000, n - done)
            await queries.enqueue([TASK] * size, [None] * size, [0] * size)
            done += size
    finally:
        await conn.close()


async def pgq_worker(dsn: str, batch_size: int, drain: bool, stamps: Stamper) -> None:
    import asyncpg
    from pgqueuer import Queries, QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint(TASK)
    async def noop(job: Job) -> None:
        submitted = None
        if job.payload:
            submitted = float(json.loads(job.payload)["t"])
        stamps.stamp(submitted)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.shutdown.set)
    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    await manager.run(batch_size=batch_size, mode=mode, dequeue_timeout=timedelta(seconds=30))


async def pgq_submit_many(
    dsn: str, clients: int, jobs: list[bytes | None], rate: float | None
) -> dict[str, Any]:
    import asyncpg
    from pgqueuer import Queries

    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    assert pool is not None
    queries = Queries.from_asyncpg_pool(pool)

    async def one(payload: bytes | None) -> None:
        await queries.enqueue(TASK, payload)

    try:
        return await drive(one, jobs, clients, rate)
    finally:
        await pool.close()


# ---------------------------------------------------------------- procrastinate


def proc_app(dsn: str, pool_size: int = 4) -> Any:
    import procrastinate

    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=max(pool_size, 2)
        )
    )


async def proc_install(dsn: str) -> None:
    app = proc_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def proc_task(app: Any, stamps: Stamper) -> Any:
    @app.task(name=TASK, queue=QUEUE)
    async def noop(t: float | None = None) -> None:
        stamps.stamp(t)

    return noop


async def proc_seed(dsn: str, n: int) -> None:
    app = proc_app(dsn)
    task = proc_task(app, Stamper(None))
    async with app.open_async():
        done = 0
        while done < n:
            size = min(1000, n - done)
            await task.batch_defer_async(*[{} for _ in range(size)])
            done += size


async def proc_worker(dsn: str, drain: bool, stamps: Stamper) -> None:
    app = proc_app(dsn)
    proc_task(app, stamps)
    async with app.open_async():
        await app.run_worker_async(queues=[QUEUE], wait=not drain)


async def proc_submit_many(
    dsn: str, clients: int, jobs: list[bytes | None], rate: float | None
) -> dict[str, Any]:
    app = proc_app(dsn, pool_size=clients)
    task = proc_task(app, Stamper(None))

    async def one(payload: bytes | None) -> None:
        if payload is None:
            await task.defer_async()
        else:
            await task.defer_async(t=float(json.loads(payload)["t"]))

    async with app.open_async():
        return await drive(one, jobs, clients, rate)


# ---------------------------------------------------------------- shared drivers


async def drive(
    call: Callable[[bytes | None], Awaitable[None]],
    jobs: list[bytes | None],
    clients: int,
    rate: float | None,
) -> dict[str, Any]:
    """Closed loop with ``clients`` callers (rate None), or open loop at ``rate`` per second.

    In open loop the payload is built at send time, so ``t`` is the moment of the call.
    """
    latencies: list[float] = []
    started = time.perf_counter()
    if rate is None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for item in jobs:
            queue.put_nowait(item)

        async def caller() -> None:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                await call(item)
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        return {
            "n": len(jobs),
            "seconds": elapsed,
            "jobs_per_s": len(jobs) / elapsed,
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
        }
    tasks: list[asyncio.Task[None]] = []
    behind: list[float] = []
    limiter = asyncio.Semaphore(256)

    async def timed(payload: bytes) -> None:
        async with limiter:
            t0 = time.perf_counter()
            await call(payload)
            latencies.append((time.perf_counter() - t0) * 1000)

    for index in range(len(jobs)):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind.append(-delay * 1000)
        payload = json.dumps({"t": time.time()}).encode()
        tasks.append(asyncio.create_task(timed(payload)))
    await asyncio.gather(*tasks)
    return {
        "n": len(jobs),
        "seconds": time.perf_counter() - started,
        "submit_p50_ms": percentile(latencies, 50),
        "submit_p95_ms": percentile(latencies, 95),
        "schedule_behind_max_ms": max(behind) if behind else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "seed", "worker", "submit", "latency"])
    parser.add_argument("--system", required=True, choices=["pgqueuer", "procrastinate"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--stamp-file")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    pgq = args.system == "pgqueuer"

    async def go() -> None:
        if args.command == "install":
            await (pgq_install(args.dsn) if pgq else proc_install(args.dsn))
            emit({"ok": True})
        elif args.command == "seed":
            await (pgq_seed(args.dsn, args.n) if pgq else proc_seed(args.dsn, args.n))
            emit({"ok": True, "n": args.n})
        elif args.command == "worker":
            stamps = Stamper(args.stamp_file)
            if pgq:
                await pgq_worker(args.dsn, args.batch_size, args.drain, stamps)
            else:
                await proc_worker(args.dsn, args.drain, stamps)
        else:
            rate = None
            jobs: list[bytes | None] = [None] * args.n
            if args.command == "latency":
                rate = args.rate
                jobs = [b"{}"] * int(args.rate * args.seconds)
            submit = pgq_submit_many if pgq else proc_submit_many
            emit(await submit(args.dsn, args.clients, jobs, rate))

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
