"""Long polling: a waiting poll is handed work queued after it started (both backends)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from oris.store.wakeup import CHANNEL
from tests.api.helpers import fails, ok, run
from tests.api.test_scheduler import runtime_of


async def test_a_waiting_poll_receives_work_queued_after_it_started(api: httpx.AsyncClient) -> None:
    waiting = asyncio.create_task(
        ok(api, "POST", "/v1/workers/poll", {"worker_id": "patient", "wait_ms": 20_000})
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await run(api, "late-arrival")
    answer = await asyncio.wait_for(waiting, 15)
    assert answer["decision"] == "dispatched"
    assert answer["thread_id"] == "late-arrival"


async def test_a_waiting_poll_without_work_answers_noop(api: httpx.AsyncClient) -> None:
    answer = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "idle", "wait_ms": 50})
    assert answer["decision"] == "noop"


async def test_wait_is_bounded(api: httpx.AsyncClient) -> None:
    for value in (-1, 30_001):
        await fails(api, "POST", "/v1/workers/poll", 400, {"worker_id": "w", "wait_ms": value})


async def test_runs_notify_other_replicas_once_committed(
    backend: str, api: httpx.AsyncClient
) -> None:
    """Other API replicas learn of new work from PostgreSQL ``NOTIFY``, sent by the run's own
    statement for a new thread and by a separate one for a rerun of a finished thread."""
    if backend != "postgres":
        pytest.skip("SQLite has no other replicas to notify; in-process wake-ups are tested above")
    dsn = runtime_of(api).settings.effective_postgres_dsn
    assert dsn is not None
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[2]))
        await run(api, "notified")
        assert await asyncio.wait_for(heard.get(), 10) == CHANNEL
        # A duplicate of a running thread is refused and wakes nobody.
        await fails(api, "POST", "/v1/jobs/run", 409, {"thread_id": "notified", "workflow": "echo"})
        lease = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w"})
        await ok(
            api,
            "POST",
            "/v1/workers/w/ack",
            {
                "attempt_id": lease["attempt_id"],
                "lease_id": lease["lease_id"],
                "terminal_status": "completed",
            },
        )
        assert heard.empty()
        await run(api, "notified")  # a new run of the finished thread
        assert await asyncio.wait_for(heard.get(), 10) == CHANNEL
    finally:
        await listener.close()
