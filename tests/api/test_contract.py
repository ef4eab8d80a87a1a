"""Every response of a scripted session validates against upstream's API contract: the one at
upstream's head (27 endpoints, with ``trace`` and ``observability`` on the timelines) and the
older snapshot this implementation started from. The files live in the project's shared
reference directory (``../shared/reference`` next to the checkout, or ``ORIS_REFERENCE_DIR``);
a missing file fails the tests rather than skipping them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from oris.services import maintenance
from tests.api.helpers import ok
from tests.api.test_scheduler import force_expire, runtime_of
from tests.support import ROOT

REFERENCE_ENV = "ORIS_REFERENCE_DIR"
HEAD = "oris-runtime-api-contract-upstream-head.json"
SNAPSHOT = "oris-runtime-api-contract.json"


def _reference_dir() -> Path:
    configured = os.environ.get(REFERENCE_ENV, "").strip()
    return Path(configured) if configured else ROOT.parent / "shared" / "reference"


def _contract(name: str = HEAD) -> dict[str, Any]:
    path = _reference_dir() / name
    if not path.is_file():
        pytest.fail(f"API contract not found at {path}; set {REFERENCE_ENV} to its directory")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _schema_for(contract: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for endpoint in contract["endpoints"]:
        if endpoint["method"] == method and endpoint["path"] == path:
            schema: dict[str, Any] = contract["schemas"][endpoint["response_schema"]]
            return schema
    raise AssertionError(f"{method} {path} is not in the contract")


def _declared_fields(schema: dict[str, Any]) -> set[str]:
    """The properties the contract declares for an envelope's ``data`` object."""
    data = schema["properties"]["data"]
    if "$ref" in data:
        data = schema["definitions"][data["$ref"].rsplit("/", 1)[-1]]
    return set(data.get("properties", {}))


def test_the_head_contract_is_the_snapshot_plus_trace_and_observability() -> None:
    """What upstream's head changed, so a further move of the contract is noticed here."""
    head, snapshot = _contract(HEAD), _contract(SNAPSHOT)

    def endpoints(contract: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((e["method"], e["path"]) for e in contract["endpoints"])

    assert endpoints(head) == endpoints(snapshot) and len(endpoints(head)) == 27
    changed = {
        name for name, schema in head["schemas"].items() if snapshot["schemas"].get(name) != schema
    }
    assert changed == {
        "ApiEnvelope_JobDetailResponse",
        "ApiEnvelope_JobTimelineResponse",
        "ApiEnvelope_TimelineExportResponse",
    }
    added = {
        name: _declared_fields(head["schemas"][name]) - _declared_fields(snapshot["schemas"][name])
        for name in changed
    }
    assert added == {
        "ApiEnvelope_JobDetailResponse": {"observability"},
        "ApiEnvelope_JobTimelineResponse": {"observability", "trace"},
        "ApiEnvelope_TimelineExportResponse": {"observability", "trace"},
    }


async def test_every_endpoint_response_matches_the_contract(api: httpx.AsyncClient) -> None:
    contract = _contract(HEAD)
    snapshot = _contract(SNAPSHOT)
    checked: set[tuple[str, str]] = set()

    async def check(method: str, template: str, url: str, body: Any = None) -> dict[str, Any]:
        response = await api.request(method, url, json=body)
        assert response.status_code == 200, (method, url, response.text)
        payload: dict[str, Any] = response.json()
        schema = _schema_for(contract, method, template)
        jsonschema.validate(payload, schema)
        jsonschema.validate(payload, _schema_for(snapshot, method, template))
        checked.add((method, template))
        data: dict[str, Any] = payload["data"]
        # Every field the contract declares is sent (optional ones as null), except
        # ``observability``, which upstream leaves out when there is nothing to report.
        missing = _declared_fields(schema) - set(data) - {"observability"}
        assert not missing, (method, template, missing)
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
    await check("GET", "/v1/jobs/:thread_id/history", "/v1/jobs/c1/history")
    detail = await check("GET", "/v1/jobs/:thread_id/detail", "/v1/jobs/c1/detail")
    timeline = await check("GET", "/v1/jobs/:thread_id/timeline", "/v1/jobs/c1/timeline")
    export = await check(
        "GET", "/v1/jobs/:thread_id/timeline/export", "/v1/jobs/c1/timeline/export"
    )
    for data in (detail, timeline, export):
        assert data["trace"] is not None and data["trace"]["trace_id"] == run["trace"]["trace_id"]
        assert data["observability"]["lease_graph"] == [[run["attempt_id"], "w"]]
        assert data["observability"]["reasoning_timeline"] == [
            "CheckpointSaved#1",
            "CheckpointSaved#2",
        ]
        assert data["observability"]["replay_cost"] == 2
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
    contract = _contract(HEAD)
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


async def test_timelines_carry_the_latest_attempts_trace_and_its_lease_graph(
    api: httpx.AsyncClient,
) -> None:
    run = await ok(api, "POST", "/v1/jobs/run", {"thread_id": "obs", "workflow": "approval"})
    first = await ok(
        api, "POST", "/v1/workers/poll", {"worker_id": "w1", "workflows": ["approval"]}
    )
    rt = runtime_of(api)
    await force_expire(rt, first["lease_id"])
    assert (await maintenance.sweep(rt)).leases_expired == 1
    second = await ok(
        api, "POST", "/v1/workers/poll", {"worker_id": "w2", "workflows": ["approval"]}
    )
    assert second["attempt_id"] == run["attempt_id"]
    await ok(
        api,
        "POST",
        "/v1/workers/w2/ack",
        {
            "attempt_id": run["attempt_id"],
            "terminal_status": "interrupted",
            "interrupt": {"value": 1},
        },
    )
    before = await ok(api, "GET", "/v1/jobs/obs/timeline")
    assert before["trace"] == (await ok(api, "GET", "/v1/jobs/obs/detail"))["trace"]
    assert before["trace"]["trace_id"] == run["trace"]["trace_id"]
    assert before["observability"]["interrupt_latency_ms"] is None
    resumed = await ok(api, "POST", "/v1/jobs/obs/resume", {"value": "yes"})
    third = await ok(
        api, "POST", "/v1/workers/poll", {"worker_id": "w3", "workflows": ["approval"]}
    )
    assert third["attempt_id"] == resumed["attempt_id"]
    expected_graph = [
        [run["attempt_id"], "w1"],
        [run["attempt_id"], "w2"],
        [resumed["attempt_id"], "w3"],
    ]
    detail = await ok(api, "GET", "/v1/jobs/obs/detail")
    for path in ("/v1/jobs/obs/timeline", "/v1/jobs/obs/timeline/export"):
        data = await ok(api, "GET", path)
        # The resume attempt's trace context (its dispatch span), not the interrupted one's.
        assert data["trace"] == third["trace"] == detail["trace"] != before["trace"], path
        assert data["trace"]["trace_id"] == run["trace"]["trace_id"], path
        observability = data["observability"]
        assert observability["lease_graph"] == expected_graph, path
        assert observability == detail["observability"], path
        latency = observability["interrupt_latency_ms"]
        assert isinstance(latency, int) and latency >= 0, path
