"""The ``sleeping`` ack behind ``ctx.sleep`` on both backends: the lease ends, the job waits as
``scheduled``, and the same attempt is dispatched again at its wake-up time from its newest
checkpoint."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.helpers import ack, fails, ok, poll, run, status_of

DEADLINE_SECONDS = 20.0


def _in(milliseconds: int) -> str:
    return (datetime.now(UTC) + timedelta(milliseconds=milliseconds)).isoformat()


async def _sleep_after_a_step(api: httpx.AsyncClient) -> dict[str, Any]:
    await run(api, "napper", workflow="nap")
    lease = await poll(api, "w1")
    await ok(
        api,
        "POST",
        "/v1/workers/w1/report-step",
        {
            "attempt_id": lease["attempt_id"],
            "action_id": "before",
            "status": "completed",
            "dedupe_token": "t-before",
            "lease_id": lease["lease_id"],
            "checkpoint": {"step": "before", "state": {"steps": {"before": 1}}},
        },
    )
    return lease


async def test_a_sleeping_attempt_frees_its_lease_and_wakes_up_from_its_checkpoint(
    api: httpx.AsyncClient,
) -> None:
    lease = await _sleep_after_a_step(api)
    wake_at = _in(800)
    answer = await ack(
        api, "w1", lease["attempt_id"], "sleeping", wake_at=wake_at, lease_id=lease["lease_id"]
    )
    assert answer["status"] == "sleeping"
    drift = datetime.fromisoformat(answer["wake_at"]) - datetime.fromisoformat(wake_at)
    assert abs(drift) < timedelta(milliseconds=1)
    again = await ack(
        api, "w1", lease["attempt_id"], "sleeping", wake_at=wake_at, lease_id=lease["lease_id"]
    )
    assert again == answer, "a repeated ack answers the same"
    assert await status_of(api, "napper") == "scheduled"
    state = await ok(api, "GET", "/v1/jobs/napper")
    assert state["run_at"] == answer["wake_at"]
    # The worker's slot is free at once, and the attempt is not dispatched before its time.
    early = await poll(api, "w1", max_active_leases=1)
    assert early["decision"] == "noop"
    assert early["worker_active_leases"] == 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (woken := await poll(api, "w2"))["decision"] != "dispatched":
        assert time.monotonic() < deadline, "never woken"
        await asyncio.sleep(0.05)
    assert datetime.now(UTC) >= datetime.fromisoformat(answer["wake_at"])
    assert woken["attempt_id"] == lease["attempt_id"]
    assert woken["attempt_no"] == 1, "a sleep costs no retry"
    assert woken["checkpoint"]["state"] == {"steps": {"before": 1}}
    done = await ack(api, "w2", woken["attempt_id"], output="rested")
    assert done["status"] == "completed"
    detail = await ok(api, "GET", "/v1/jobs/napper/detail")
    kinds = [event["event_type"] for event in detail["timeline"]]
    assert kinds.count("attempt_sleeping") == 1
    assert detail["status"] == "completed"


async def test_a_sleeping_job_can_be_cancelled(api: httpx.AsyncClient) -> None:
    lease = await _sleep_after_a_step(api)
    await ack(api, "w1", lease["attempt_id"], "sleeping", wake_at=_in(60_000))
    cancelled = await ok(api, "POST", "/v1/jobs/napper/cancel", {})
    assert cancelled["status"] == "cancelled"
    assert (await poll(api, "w1"))["decision"] == "noop"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "wake_at is required when terminal_status is sleeping"),
        ({"wake_at": "later"}, "wake_at must be an RFC 3339 timestamp with an offset"),
        (
            {"wake_at": "2030-01-01T00:00:00"},
            "wake_at must be an RFC 3339 timestamp with an offset",
        ),
        ({"wake_at": "2999-01-01T00:00:00Z"}, "wake_at must be at most 365 days ahead"),
    ],
)
async def test_a_bad_sleeping_ack_is_a_400_and_keeps_the_lease(
    api: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    await run(api, "restless")
    lease = await poll(api, "w1")
    body = {"attempt_id": lease["attempt_id"], "terminal_status": "sleeping", **fields}
    error = await fails(api, "POST", "/v1/workers/w1/ack", 400, body)
    assert error["message"] == message
    assert await status_of(api, "restless") == "running"
