"""Long polling: a waiting poll is handed work queued after it started (both backends)."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.helpers import fails, ok, run


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
