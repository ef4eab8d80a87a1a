"""Every response of a scripted session validates against upstream's API contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.api.helpers import ok

CONTRACT = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "oris-runtime-api-contract.json"
)


def _contract() -> dict[str, Any]:
    if not CONTRACT.is_file():
        pytest.skip(f"contract file not found at {CONTRACT}")
    loaded: dict[str, Any] = json.loads(CONTRACT.read_text())
    return loaded


def _schema_for(contract: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for endpoint in contract["endpoints"]:
        if endpoint["method"] == method and endpoint["path"] == path:
            schema: dict[str, Any] = contract["schemas"][endpoint["response_schema"]]
            return schema
    raise AssertionError(f"{method} {path} is not in the contract")


async def test_every_endpoint_response_matches_the_contract(api: httpx.AsyncClient) -> None:
    contract = _contract()
    checked: set[tuple[str, str]] = set()

    async def check(method: str, template: str, url: str, body: Any = None) -> dict[str, Any]:
        response = await api.request(method, url, json=body)
        assert response.status_code == 200, (method, url, response.text)
        payload: dict[str, Any] = response.json()
        jsonschema.validate(payload, _schema_for(contract, method, template))
        checked.add((method, template))
        data: dict[str, Any] = payload["data"]
        return data

    run = await check(
        "POST",
        "/v1/jobs/run",
        "/v1/jobs/run",
        {"thread_id": "c1", "input": "x", "workflow": "approval"},
    )
    await check(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        {
            "thread_id": "c2",
            "retry_policy": {"strategy": "fixed", "backoff_ms": 1, "max_retries": 0},
        },
    )
    await check("GET", "/v1/jobs", "/v1/jobs")
    poll = await check(
        "POST",
        "/v1/workers/poll",
        "/v1/workers/poll",
        {"worker_id": "w", "workflows": ["approval"]},
    )
    lease = {"lease_id": poll["lease_id"]}
    await check("POST", "/v1/workers/:worker_id/heartbeat", "/v1/workers/w/heartbeat", lease)
    await check("POST", "/v1/workers/:worker_id/extend-lease", "/v1/workers/w/extend-lease", lease)
    step = await check(
        "POST",
        "/v1/workers/:worker_id/report-step",
        "/v1/workers/w/report-step",
        {
            "attempt_id": run["attempt_id"],
            "action_id": "draft",
            "status": "completed",
            "dedupe_token": "d",
            "checkpoint": {"state": {"steps": {"draft": "v"}}},
        },
    )
    await check(
        "POST",
        "/v1/workers/:worker_id/ack",
        "/v1/workers/w/ack",
        {
            "attempt_id": run["attempt_id"],
            "terminal_status": "interrupted",
            "interrupt": {"value": "approve?"},
        },
    )
    await check("GET", "/v1/jobs/:thread_id", "/v1/jobs/c1")
    await check("GET", "/v1/jobs/:thread_id/detail", "/v1/jobs/c1/detail")
    await check("GET", "/v1/jobs/:thread_id/history", "/v1/jobs/c1/history")
    await check("GET", "/v1/jobs/:thread_id/timeline", "/v1/jobs/c1/timeline")
    await check("GET", "/v1/jobs/:thread_id/timeline/export", "/v1/jobs/c1/timeline/export")
    await check(
        "GET",
        "/v1/jobs/:thread_id/checkpoints/:checkpoint_id",
        f"/v1/jobs/c1/checkpoints/{step['checkpoint_id']}",
    )
    interrupts = await check("GET", "/v1/interrupts", "/v1/interrupts")
    interrupt_id = interrupts["interrupts"][0]["interrupt_id"]
    await check("GET", "/v1/interrupts/:interrupt_id", f"/v1/interrupts/{interrupt_id}")
    await check(
        "POST",
        "/v1/interrupts/:interrupt_id/resume",
        f"/v1/interrupts/{interrupt_id}/resume",
        {"value": "yes"},
    )
    await check("POST", "/v1/jobs/:thread_id/resume", "/v1/jobs/c1/resume", {"value": "yes"})
    resumed = await ok(
        api, "POST", "/v1/workers/poll", {"worker_id": "w", "workflows": ["approval"]}
    )
    await ok(
        api,
        "POST",
        "/v1/workers/w/ack",
        {
            "attempt_id": resumed["attempt_id"],
            "terminal_status": "interrupted",
            "interrupt": {"value": "again?"},
        },
    )
    second = (await ok(api, "GET", "/v1/interrupts", params={"status": "pending"}))["interrupts"][
        0
    ]["interrupt_id"]
    await check(
        "POST",
        "/v1/interrupts/:interrupt_id/reject",
        f"/v1/interrupts/{second}/reject",
        {"reason": "no"},
    )
    failing = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w"})
    await check(
        "POST",
        "/v1/workers/:worker_id/ack",
        "/v1/workers/w/ack",
        {"attempt_id": failing["attempt_id"], "terminal_status": "failed"},
    )
    await check(
        "GET", "/v1/attempts/:attempt_id/retries", f"/v1/attempts/{failing['attempt_id']}/retries"
    )
    await check("GET", "/v1/dlq", "/v1/dlq")
    await check("GET", "/v1/dlq/:attempt_id", f"/v1/dlq/{failing['attempt_id']}")
    await check("POST", "/v1/dlq/:attempt_id/replay", f"/v1/dlq/{failing['attempt_id']}/replay")
    again = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w"})
    await ok(
        api,
        "POST",
        "/v1/workers/w/ack",
        {"attempt_id": again["attempt_id"], "terminal_status": "completed"},
    )
    await check("POST", "/v1/jobs/:thread_id/replay", "/v1/jobs/c2/replay", {})
    await check("POST", "/v1/jobs/:thread_id/cancel", "/v1/jobs/c2/cancel", {"reason": "done"})
    await check("GET", "/v1/audit/logs", "/v1/audit/logs")
    metrics = await api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    checked.add(("GET", "/metrics"))
    every = {(e["method"], e["path"]) for e in contract["endpoints"]}
    assert checked == every, every - checked


async def test_batch_ack_items_carry_the_ack_response_of_the_contract(
    api: httpx.AsyncClient,
) -> None:
    """``/acks`` is not upstream's, but each successful item is exactly an ``/ack`` answer."""
    contract = _contract()
    schema = _schema_for(contract, "POST", "/v1/workers/:worker_id/ack")
    for index in range(3):
        await ok(api, "POST", "/v1/jobs/run", {"thread_id": f"b{index}", "input": index})
    leases = (await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w", "limit": 3}))[
        "dispatches"
    ]
    statuses = ["completed", "completed", "failed"]
    response = await api.post(
        "/v1/workers/w/acks",
        json={
            "acks": [
                {"attempt_id": item["attempt_id"], "terminal_status": status}
                for item, status in zip(leases, statuses, strict=True)
            ]
        },
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    results = payload["data"]["results"]
    assert [r["ok"] for r in results] == [True, True, True]
    for result in results:
        envelope = {"meta": payload["meta"], "request_id": payload["request_id"], **result}
        envelope.pop("ok")
        envelope.pop("attempt_id")
        jsonschema.validate(envelope, schema)
