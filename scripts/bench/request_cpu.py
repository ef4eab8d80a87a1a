"""CPU time an `oris serve` process spends per request, one request at a time.

Usage (against a server started on a scratch database, nothing else talking to it):

    .venv/bin/python scripts/bench/request_cpu.py --url http://127.0.0.1:8099 --pid PID

Sends each request type N times in a row from one client and divides the growth of the
process's user+system CPU time (from /proc) by N: `/healthz`, an inspect of one job, a submit,
and an empty poll. With one client there is no batching in the event loop, so these are the
fixed costs a request pays; `bench.py`'s api workload measures the same under 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
from bench import proc_cpu  # this script's folder is on sys.path when it runs


async def measure(url: str, pid: int, repeat: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        thread = f"cpu-{time.time_ns()}"
        (await http.post("/v1/jobs/run", json={"thread_id": thread})).raise_for_status()
        calls: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "healthz": lambda: http.get("/healthz"),
            "inspect": lambda: http.get(f"/v1/jobs/{thread}"),
            "run": lambda: http.post("/v1/jobs/run", json={"thread_id": f"cpu-{time.time_ns()}"}),
            "empty poll": lambda: http.post(
                "/v1/workers/poll", json={"worker_id": "cpu-probe", "workflows": ["none"]}
            ),
        }
        out: dict[str, float] = {}
        for name, call in calls.items():
            for _ in range(20):  # warm the statement and connection caches
                (await call()).raise_for_status()
            before = proc_cpu(pid)
            for _ in range(repeat):
                (await call()).raise_for_status()
            out[name] = (proc_cpu(pid) - before) * 1000 / repeat
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the oris serve process")
    parser.add_argument("--pid", required=True, type=int, help="its process id")
    parser.add_argument("--repeat", type=int, default=400, help="requests per type")
    args = parser.parse_args()
    for name, ms in asyncio.run(measure(args.url, args.pid, args.repeat)).items():
        print(f"{name:<12} {ms:6.2f} ms of server CPU per request")


if __name__ == "__main__":
    main()
