"""Workflow defaults sent with a poll: a retry policy and a timeout for jobs without their own."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from oris.services import maintenance
from tests.api.helpers import ack, fails, ok, poll, run, status_of
from tests.api.test_scheduler import runtime_of

RETRY_TWICE = {"strategy": "fixed", "backoff_ms": 1, "max_retries": 2}


async def leased(api: httpx.AsyncClient, defaults: dict[str, Any], **fields: Any) -> Any:
    """Poll for ``wf`` with these defaults until something is dispatched (retries are due
    after 1 ms; bounded)."""
    for _ in range(500):
        answer = await poll(api, "w1", workflows=["wf"], workflow_defaults=defaults, **fields)
        if answer["decision"] == "dispatched":
            return answer
        await asyncio.sleep(0.005)
    raise AssertionError("nothing dispatched")


async def test_a_declared_retry_policy_retries_a_job_that_has_none(api: httpx.AsyncClient) -> None:
    await run(api, "plain", workflow="wf")
    defaults = {"wf": {"retry_policy": RETRY_TWICE}}
    outcomes = []
    for _ in range(3):
        attempt = await leased(api, defaults)
        answer = await ack(api, "w1", attempt["attempt_id"], status="failed")
        outcomes.append((attempt["attempt_no"], answer["status"]))
    assert outcomes == [(1, "retry_scheduled"), (2, "retry_scheduled"), (3, "failed")]
    assert await status_of(api, "plain") == "failed"


async def test_without_declared_defaults_a_job_without_a_policy_is_not_retried(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "undeclared", workflow="wf")
    attempt = await poll(api, "w1", workflows=["wf"])
    assert (await ack(api, "w1", attempt["attempt_id"], status="failed"))["status"] == "failed"


async def test_a_jobs_own_retry_policy_wins_over_the_declared_one(api: httpx.AsyncClient) -> None:
    own = {"strategy": "fixed", "backoff_ms": 1, "max_retries": 0}
    await run(api, "own-policy", workflow="wf", retry_policy=own)
    attempt = await leased(api, {"wf": {"retry_policy": RETRY_TWICE}})
    assert (await ack(api, "w1", attempt["attempt_id"], status="failed"))["status"] == "failed"


async def test_a_declared_timeout_applies_to_a_job_without_one(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(api, "no-timeout", workflow="wf")
    await run(
        api,
        "own-timeout",
        workflow="wf",
        timeout_policy={"timeout_ms": 3_600_000, "on_timeout_status": "failed"},
    )
    defaults = {"wf": {"timeout_ms": 1, "retry_policy": RETRY_TWICE}}
    first = await poll(api, "w1", workflows=["wf"], limit=2, workflow_defaults=defaults)
    assert {d["thread_id"] for d in first["dispatches"]} == {"no-timeout", "own-timeout"}
    for _ in range(500):  # the 1 ms timeout has run out after the next sweep or so
        await maintenance.sweep(rt)
        if await status_of(api, "no-timeout") != "running":
            break
        await asyncio.sleep(0.005)
    # Timed out, then retried under the declared policy; the job's own hour is still running.
    assert await status_of(api, "no-timeout") == "retry_backoff"
    assert await status_of(api, "own-timeout") == "running"
    timeline = await ok(api, "GET", "/v1/jobs/no-timeout/timeline")
    assert "attempt_timed_out" in [event["event_type"] for event in timeline["timeline"]]


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        (
            {"wf": {"retry_policy": {"strategy": "sometimes", "backoff_ms": 1, "max_retries": 1}}},
            "retry_policy.strategy must be one of: fixed|exponential",
        ),
        ({"wf": {"retry_policy": {**RETRY_TWICE, "backoff_ms": 0}}}, "backoff_ms must be > 0"),
        ({"wf": {"timeout_ms": 0}}, "timeout_policy.timeout_ms must be > 0"),
        ({"bad name!": {"timeout_ms": 5}}, "workflow_defaults name contains unsupported"),
        ({"wf": {"timeout_ms": "5"}}, None),
    ],
)
async def test_bad_workflow_defaults_refuse_the_poll_and_lease_nothing(
    api: httpx.AsyncClient, defaults: dict[str, Any], message: str | None
) -> None:
    await run(api, "waiting", workflow="wf")
    body = {"worker_id": "w1", "workflows": ["wf"], "workflow_defaults": defaults}
    error = await fails(api, "POST", "/v1/workers/poll", 400, body)
    assert error["code"] == "invalid_argument"
    if message is not None:
        assert message in error["message"]
    assert await status_of(api, "waiting") == "queued"
