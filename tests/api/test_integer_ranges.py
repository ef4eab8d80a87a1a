"""Every integer field and query parameter has a range; outside it the answer is a 400.

Integers beyond the columns (BIGINT, a 32-bit attempt number), beyond the arithmetic
(``now + delay``) or beyond what JSON keeps exactly are refused before anything is written, on
both backends; integers in JSON values within 64 bits come back exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from oris.domain.clock import now_ms
from oris.domain.retry import MAX_DELAY_MS
from oris.domain.validation import INT64_MAX, MAX_DURATION_MS, MAX_RETRIES
from tests.api.helpers import fails, ok, poll, run, status_of

I63 = 2**63  # one past BIGINT
I31 = 2**31  # one past INTEGER
U64 = 2**64  # one past what a JSON body may carry
FIXED = {"strategy": "fixed", "backoff_ms": 10, "max_retries": 3}


def _timeout(ms: int) -> dict[str, Any]:
    return {"timeout_policy": {"timeout_ms": ms, "on_timeout_status": "failed"}}


def _retry(**fields: Any) -> dict[str, Any]:
    return {"retry_policy": {**FIXED, **fields}}


RUN_REFUSED = {
    "timeout_ms=2^63": _timeout(I63),
    "timeout_ms=max+1": _timeout(MAX_DURATION_MS + 1),
    "backoff_ms=2^63": _retry(backoff_ms=I63),
    "backoff_ms=max+1": _retry(backoff_ms=MAX_DURATION_MS + 1),
    "max_backoff_ms=2^63": _retry(strategy="exponential", max_backoff_ms=I63),
    "max_backoff_ms=max+1": _retry(strategy="exponential", max_backoff_ms=MAX_DURATION_MS + 1),
    "max_retries=2^31": _retry(max_retries=I31),
    "max_retries=2^63": _retry(max_retries=I63),
    "max_retries=max+1": _retry(max_retries=MAX_RETRIES + 1),
    "priority=2^63": {"priority": I63},
    "input=2^64": {"input": U64},
    "input nested below -2^63": {"input": {"a": [1, {"b": -(2**63) - 1}]}},
    "input 400 digits": {"input": 10**400},
}


@pytest.mark.parametrize("fields", RUN_REFUSED.values(), ids=RUN_REFUSED.keys())
async def test_run_refuses_integers_out_of_range(
    api: httpx.AsyncClient, fields: dict[str, Any]
) -> None:
    error = await fails(api, "POST", "/v1/jobs/run", 400, {"thread_id": "wide", **fields})
    assert error["code"] == "invalid_argument"
    await fails(api, "GET", "/v1/jobs/wide", 404)


RUN_ACCEPTED = {
    "timeout_ms=max": _timeout(MAX_DURATION_MS),
    "backoff_ms=max": _retry(backoff_ms=MAX_DURATION_MS),
    "max_backoff_ms=max": _retry(strategy="exponential", max_backoff_ms=MAX_DURATION_MS),
    "max_retries=max": _retry(max_retries=MAX_RETRIES),
}


@pytest.mark.parametrize("fields", RUN_ACCEPTED.values(), ids=RUN_ACCEPTED.keys())
async def test_run_accepts_the_range_bounds(api: httpx.AsyncClient, fields: dict[str, Any]) -> None:
    await run(api, "edge", **fields)
    leased = await poll(api, "w-edge")
    assert leased["thread_id"] == "edge"


@pytest.mark.parametrize("value", [U64 - 1, -(2**63), INT64_MAX, 2**53 + 1])
async def test_json_integers_within_64_bits_come_back_exactly(
    api: httpx.AsyncClient, value: int
) -> None:
    await run(api, "exact", input={"n": value, "list": [value]})
    state = await ok(api, "GET", "/v1/jobs/exact")
    assert state["input"] == {"n": value, "list": [value]}
    leased = await poll(api, "w-exact")
    assert leased["input"] == {"n": value, "list": [value]}
    await ok(
        api,
        "POST",
        "/v1/workers/w-exact/ack",
        {"attempt_id": leased["attempt_id"], "terminal_status": "completed", "output": [value]},
    )
    assert (await ok(api, "GET", "/v1/jobs/exact"))["output"] == [value]


ACK_REFUSED = {
    "error.retry_delay_ms=2^63-1": {
        "terminal_status": "failed",
        "error": {"message": "x", "retry_delay_ms": INT64_MAX},
    },
    "error.retry_delay_ms=max+1": {
        "terminal_status": "failed",
        "error": {"message": "x", "retry_delay_ms": MAX_DURATION_MS + 1},
    },
    "error.extra=2^64": {"terminal_status": "failed", "error": {"message": "x", "n": U64}},
    "retry_policy.backoff_ms=2^63": {"terminal_status": "failed", **_retry(backoff_ms=I63)},
    "retry_policy.max_backoff_ms=2^63": {
        "terminal_status": "failed",
        **_retry(strategy="exponential", max_backoff_ms=I63),
    },
    "retry_policy.max_retries=2^31": {"terminal_status": "failed", **_retry(max_retries=I31)},
    "output=2^64": {"terminal_status": "completed", "output": {"n": U64}},
    "interrupt.value=2^64": {"terminal_status": "interrupted", "interrupt": {"value": U64}},
}


@pytest.mark.parametrize("fields", ACK_REFUSED.values(), ids=ACK_REFUSED.keys())
@pytest.mark.parametrize("path", ["ack", "acks"])
async def test_ack_refuses_integers_out_of_range(
    api: httpx.AsyncClient, fields: dict[str, Any], path: str
) -> None:
    await run(api, "ack-wide", **_retry())
    leased = await poll(api, "w-wide")
    item = {"attempt_id": leased["attempt_id"], "lease_id": leased["lease_id"], **fields}
    body = item if path == "ack" else {"acks": [item]}
    response = await api.post(f"/v1/workers/w-wide/{path}", json=body)
    if response.status_code == 200 and path == "acks":
        # Refused by the ack's own checks: the batch answers each item; this one is a 400.
        [result] = response.json()["data"]["results"]
        assert (result["ok"], result["status"]) == (False, 400), result
        error = result["error"]
    else:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
    assert error["code"] == "invalid_argument"
    # Nothing was applied: the lease is still the worker's to finish.
    assert await status_of(api, "ack-wide") == "running"
    await ok(
        api,
        "POST",
        "/v1/workers/w-wide/ack",
        {"attempt_id": leased["attempt_id"], "terminal_status": "completed"},
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"error": {"message": "x", "retry_delay_ms": MAX_DURATION_MS}},
        {"retry_policy": {"strategy": "fixed", "backoff_ms": MAX_DURATION_MS, "max_retries": 1}},
    ],
    ids=["retry_delay_ms=max", "backoff_ms=max"],
)
async def test_the_longest_retry_delays_are_booked_within_a_year(
    api: httpx.AsyncClient, fields: dict[str, Any]
) -> None:
    await run(api, "slow-retry", **_retry())
    leased = await poll(api, "w-slow")
    before = now_ms()
    answer = await ok(
        api,
        "POST",
        "/v1/workers/w-slow/ack",
        {"attempt_id": leased["attempt_id"], "terminal_status": "failed", **fields},
    )
    assert answer["status"] == "retry_scheduled"
    history = await ok(api, "GET", f"/v1/attempts/{leased['attempt_id']}/retries")
    assert history["history"][-1]["backoff_ms"] == MAX_DELAY_MS
    due_ms = datetime.fromisoformat(answer["next_retry_at"]).timestamp() * 1000
    assert before + MAX_DELAY_MS <= due_ms <= now_ms() + MAX_DELAY_MS


WORKER_REFUSED = {
    "poll limit=2^63": ("/v1/workers/poll", {"worker_id": "w", "limit": I63}),
    "poll max_active_leases=2^63": (
        "/v1/workers/poll",
        {"worker_id": "w", "max_active_leases": I63},
    ),
    "poll tenant_max_active_leases=2^63": (
        "/v1/workers/poll",
        {"worker_id": "w", "tenant_max_active_leases": I63},
    ),
    "poll wait_ms=2^63": ("/v1/workers/poll", {"worker_id": "w", "wait_ms": I63}),
    "heartbeat lease_ttl_seconds=2^63": (
        "/v1/workers/w/heartbeat",
        {"lease_id": "lease-x", "lease_ttl_seconds": I63},
    ),
    "report-step checkpoint.state=2^64": (
        "/v1/workers/w/report-step",
        {
            "attempt_id": "a",
            "action_id": "s",
            "status": "completed",
            "dedupe_token": "t",
            "checkpoint": {"state": {"n": U64}},
        },
    ),
    "job resume value=2^64": ("/v1/jobs/any/resume", {"value": U64}),
    "interrupt resume value=2^64": ("/v1/interrupts/any/resume", {"value": [U64]}),
}


@pytest.mark.parametrize("case", WORKER_REFUSED.values(), ids=WORKER_REFUSED.keys())
async def test_other_bodies_refuse_integers_out_of_range(
    api: httpx.AsyncClient, case: tuple[str, dict[str, Any]]
) -> None:
    path, body = case
    error = await fails(api, "POST", path, 400, body)
    assert error["code"] == "invalid_argument"


QUERY_REFUSED = {
    "jobs offset=2^63": ("/v1/jobs", {"offset": I63}),
    "jobs limit=2^63": ("/v1/jobs", {"limit": I63}),
    "audit from_ms=2^63": ("/v1/audit/logs", {"from_ms": I63}),
    "audit to_ms=2^63": ("/v1/audit/logs", {"to_ms": I63}),
    "audit before_id=2^63": ("/v1/audit/logs", {"before_id": I63}),
    "audit from_ms<0": ("/v1/audit/logs", {"from_ms": -1}),
    "audit limit=2^63": ("/v1/audit/logs", {"limit": I63}),
    "interrupts limit=2^63": ("/v1/interrupts", {"limit": I63}),
    "dlq limit=2^63": ("/v1/dlq", {"limit": I63}),
}


@pytest.mark.parametrize("case", QUERY_REFUSED.values(), ids=QUERY_REFUSED.keys())
async def test_query_parameters_refuse_integers_out_of_range(
    api: httpx.AsyncClient, case: tuple[str, dict[str, int]]
) -> None:
    path, params = case
    error = await fails(api, "GET", path, 400, params=params)
    assert error["code"] == "invalid_argument"


QUERY_ACCEPTED = {
    "jobs offset=2^63-1": ("/v1/jobs", {"offset": INT64_MAX}),
    "jobs limit=2^63-1": ("/v1/jobs", {"limit": INT64_MAX}),
    "audit from_ms=2^63-1": ("/v1/audit/logs", {"from_ms": INT64_MAX}),
    "audit to_ms=2^63-1": ("/v1/audit/logs", {"to_ms": INT64_MAX}),
    "audit before_id=2^63-1": ("/v1/audit/logs", {"before_id": INT64_MAX}),
    "interrupts limit=2^63-1": ("/v1/interrupts", {"limit": INT64_MAX}),
    "dlq limit=2^63-1": ("/v1/dlq", {"limit": INT64_MAX}),
}


@pytest.mark.parametrize("case", QUERY_ACCEPTED.values(), ids=QUERY_ACCEPTED.keys())
async def test_query_parameters_accept_the_range_bounds(
    api: httpx.AsyncClient, case: tuple[str, dict[str, int]]
) -> None:
    path, params = case
    await run(api, "listed")
    await ok(api, "GET", path, params=params)
