"""Delayed start on both backends: ``run_at`` / ``delay_ms``, status ``scheduled``, no early lease."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from oris.domain.clock import now_ms
from oris.services import maintenance
from tests.api.helpers import ack, fails, ok, poll, run, status_of
from tests.api.test_scheduler import runtime_of

DEADLINE_SECONDS = 20.0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def _poll_until_dispatched(api: httpx.AsyncClient, worker_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        answer = await poll(api, worker_id)
        if answer["decision"] == "dispatched":
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the delayed job was never dispatched")


async def test_a_delayed_job_is_not_leased_before_its_time_and_is_leased_after(
    api: httpx.AsyncClient,
) -> None:
    submitted = await run(api, "later", delay_ms=1500, input={"n": 1})
    assert submitted["status"] == "scheduled"
    run_at = datetime.fromisoformat(submitted["run_at"])
    assert await status_of(api, "later") == "scheduled"
    state = await ok(api, "GET", "/v1/jobs/later")
    assert state["run_at"] == submitted["run_at"]
    listed = await ok(api, "GET", "/v1/jobs", params={"status": "scheduled"})
    assert [job["thread_id"] for job in listed["jobs"]] == ["later"]
    assert listed["jobs"][0]["run_at"] == submitted["run_at"]

    assert (await poll(api, "early"))["decision"] == "noop"
    metrics = (await api.get("/metrics")).text
    assert _metric(metrics, "oris_runtime_queue_depth") == 0
    assert _metric(metrics, "oris_runtime_scheduled_jobs") == 1

    dispatched = await _poll_until_dispatched(api, "patient")
    leased_at = datetime.now(UTC)
    assert leased_at >= run_at, "leased before its start time"
    assert dispatched["thread_id"] == "later"
    assert dispatched["input"] == {"n": 1}
    assert await status_of(api, "later") == "running"
    await ack(api, "patient", dispatched["attempt_id"], output="done")
    assert await status_of(api, "later") == "completed"


async def test_a_due_scheduled_job_shows_queued_after_a_maintenance_pass(
    api: httpx.AsyncClient,
) -> None:
    rt = runtime_of(api)
    submitted = await run(api, "soon", delay_ms=200)
    assert submitted["status"] == "scheduled"
    deadline = time.monotonic() + DEADLINE_SECONDS
    while await status_of(api, "soon") == "scheduled":
        assert time.monotonic() < deadline, "never promoted"
        await maintenance.sweep(rt)
        await asyncio.sleep(0.05)
    assert await status_of(api, "soon") == "queued"
    metrics = (await api.get("/metrics")).text
    assert _metric(metrics, "oris_runtime_scheduled_jobs") == 0


async def test_due_work_keeps_priority_order_and_a_future_job_waits(
    api: httpx.AsyncClient,
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    await run(api, "far", delay_ms=3_600_000, priority=100)
    await run(api, "low", priority=1)
    await run(api, "high", run_at=past, priority=50)
    first = await poll(api, "w")
    second = await poll(api, "w")
    third = await poll(api, "w")
    assert [first["thread_id"], second["thread_id"]] == ["high", "low"]
    assert third["decision"] == "noop"
    assert await status_of(api, "far") == "scheduled"


async def test_a_scheduled_job_can_be_cancelled_and_is_never_leased(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "doomed", delay_ms=300)
    cancelled = await ok(api, "POST", "/v1/jobs/doomed/cancel", {"reason": "not needed"})
    assert cancelled["status"] == "cancelled"
    target = now_ms() + 600
    while now_ms() < target:  # past its start time, it must still not be dispatched
        assert (await poll(api, "w"))["decision"] == "noop"
        await asyncio.sleep(0.05)
    assert await status_of(api, "doomed") == "cancelled"


async def test_a_repeated_delayed_submit_with_its_key_is_idempotent(
    api: httpx.AsyncClient,
) -> None:
    first = await run(api, "idem", delay_ms=60_000, idempotency_key="k-delay")
    again = await run(api, "idem", delay_ms=60_000, idempotency_key="k-delay")
    assert again["idempotent_replay"] is True
    assert again["run_at"] == first["run_at"]
    error = await fails(
        api,
        "POST",
        "/v1/jobs/run",
        409,
        {"thread_id": "idem", "delay_ms": 1, "idempotency_key": "k-delay"},
    )
    assert error["code"] == "conflict"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"delay_ms": 10, "run_at": "2030-01-01T00:00:00Z"}, "give run_at or delay_ms, not both"),
        ({"delay_ms": -1}, "delay_ms must be between 0 and 31536000000"),
        ({"delay_ms": 31_536_000_001}, "delay_ms must be between 0 and 31536000000"),
        ({"run_at": "tomorrow"}, "run_at must be an RFC 3339 timestamp with an offset"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at must be an RFC 3339 timestamp with an offset"),
        ({"run_at": "2030-02-30T00:00:00Z"}, "run_at must be an RFC 3339 timestamp with an offset"),
        ({"run_at": "2999-01-01T00:00:00+02:00"}, "run_at must be at most 365 days ahead"),
    ],
)
async def test_bad_start_times_are_refused_and_write_nothing(
    api: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    error = await fails(api, "POST", "/v1/jobs/run", 400, {"thread_id": "bad", **fields})
    assert error["code"] == "invalid_argument"
    assert error["message"] == message
    await fails(api, "GET", "/v1/jobs/bad", 404)


@pytest.mark.parametrize("value", ["soon", 1.5, True, [1]])
async def test_a_delay_that_is_not_an_integer_is_a_400(api: httpx.AsyncClient, value: Any) -> None:
    error = await fails(api, "POST", "/v1/jobs/run", 400, {"thread_id": "x", "delay_ms": value})
    assert error["code"] == "invalid_argument"
