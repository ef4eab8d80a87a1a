"""Job endpoints on both backends: run, idempotency, reads, cancel, envelopes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from oris.cli.smoke import SMOKE_WORKFLOW
from oris.domain.validation import RUNTIME_WORKFLOWS
from tests.api.helpers import ack, fails, ok, poll, run, status_of
from tests.api.test_scheduler import runtime_of


async def test_run_queues_the_job_and_returns_at_once(api: httpx.AsyncClient) -> None:
    data = await run(api, "ops-smoke-1", input="hello", idempotency_key="ops-smoke-key-1")
    assert data["status"] == "queued"
    assert data["idempotent_replay"] is False
    assert data["idempotency_key"] == "ops-smoke-key-1"
    assert data["trace"]["traceparent"].startswith("00-" + data["trace"]["trace_id"])
    state = await ok(api, "GET", "/v1/jobs/ops-smoke-1")
    assert state["status"] == "queued"
    assert state["input"] == "hello"
    assert state["workflow"] == "echo"
    assert state["values"] == {}
    assert state["checkpoint_id"]


async def test_post_jobs_is_the_same_as_run(api: httpx.AsyncClient) -> None:
    data = await ok(
        api, "POST", "/v1/jobs", {"thread_id": "t-alias", "input": {"any": ["json", 1]}}
    )
    assert data["status"] == "queued"
    assert (await ok(api, "GET", "/v1/jobs/t-alias"))["input"] == {"any": ["json", 1]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"thread_id": "  "}, "thread_id must not be empty"),
        ({"thread_id": "a b"}, "thread_id contains unsupported characters"),
        ({"thread_id": "x" * 129}, "thread_id must be 128 characters or fewer"),
        ({"thread_id": "t", "priority": 101}, "priority must be between 0 and 100"),
        ({"thread_id": "t", "priority": -1}, "priority must be between 0 and 100"),
        (
            {"thread_id": "t", "tenant_id": "bad tenant"},
            "tenant_id contains unsupported characters",
        ),
        ({"thread_id": "t", "tenant_id": "x" * 129}, "tenant_id must be 128 characters or fewer"),
        ({"thread_id": "t", "idempotency_key": " "}, "idempotency_key must not be empty"),
        (
            {"thread_id": "t", "timeout_policy": {"timeout_ms": 0, "on_timeout_status": "failed"}},
            "timeout_policy.timeout_ms must be > 0",
        ),
        (
            {"thread_id": "t", "timeout_policy": {"timeout_ms": 5, "on_timeout_status": "nope"}},
            "timeout_policy.on_timeout_status must be one of: failed|cancelled",
        ),
        (
            {
                "thread_id": "t",
                "retry_policy": {"strategy": "fixed", "backoff_ms": 0, "max_retries": 1},
            },
            "retry_policy.backoff_ms must be > 0",
        ),
        (
            {
                "thread_id": "t",
                "retry_policy": {"strategy": "linear", "backoff_ms": 5, "max_retries": 1},
            },
            "retry_policy.strategy must be one of: fixed|exponential",
        ),
        ({"thread_id": "t", "workflow": "no spaces"}, "workflow contains unsupported characters"),
    ],
)
async def test_run_validation_errors_write_nothing(
    api: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    error = await fails(api, "POST", "/v1/jobs/run", 400, body)
    assert error["code"] == "invalid_argument"
    assert error["message"] == message
    listing = await ok(api, "GET", "/v1/jobs")
    assert listing["jobs"] == []
    assert listing["total"] == 0


@pytest.mark.parametrize(
    ("path", "workflow", "idempotency_key"),
    [
        ("/v1/jobs/run", "oris.evil", None),
        ("/v1/jobs", "ORIS.smoke", None),
        ("/v1/jobs/run", "Oris.", "k-reserved"),
    ],
)
async def test_reserved_workflow_names_the_runtime_does_not_serve_are_400(
    api: httpx.AsyncClient, workflow: str, path: str, idempotency_key: str | None
) -> None:
    body = {"thread_id": "t-reserved", "workflow": workflow, "idempotency_key": idempotency_key}
    error = await fails(api, "POST", path, 400, body)
    assert error["code"] == "invalid_argument"
    assert "reserved" in error["message"] and "oris.smoke" in error["message"]
    assert error["details"] == {"workflow": workflow}
    assert (await ok(api, "GET", "/v1/jobs"))["total"] == 0
    refused = await ok(
        api, "GET", "/v1/audit/logs", params={"action": "job.run", "result": "error"}
    )
    assert [row["status_code"] for row in refused["logs"]] == [400]
    # The runtime's own probe workflow is still accepted.
    served = await ok(api, "POST", path, {"thread_id": "t-smoke", "workflow": "oris.smoke"})
    assert served["workflow"] == "oris.smoke"


def test_the_smoke_workflow_is_one_the_runtime_serves() -> None:
    assert SMOKE_WORKFLOW in RUNTIME_WORKFLOWS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "thread_id"),
        ({"thread_id": 5}, "thread_id"),
        ({"thread_id": "t", "priority": "5"}, "priority"),
        (
            {"thread_id": "t", "timeout_policy": {"timeout_ms": 5}},
            "timeout_policy.on_timeout_status",
        ),
    ],
)
async def test_wrong_shapes_are_400_with_the_offending_field(
    api: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    error = await fails(api, "POST", "/v1/jobs/run", 400, body)
    assert error["code"] == "invalid_argument"
    assert field in [item["field"] for item in error["details"]["fields"]]


async def test_framework_rejections_use_the_error_envelope(api: httpx.AsyncClient) -> None:
    malformed = await api.post(
        "/v1/jobs/run", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_argument"
    wrong_type = await api.post(
        "/v1/jobs/run", content=b"thread_id=x", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"]["code"] == "unsupported_media_type"
    not_object = await api.post("/v1/jobs/run", json=[1, 2])
    assert not_object.status_code == 400
    unknown = await api.get("/v1/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    wrong_method = await api.delete("/v1/jobs")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    huge = await api.post(
        "/v1/jobs/run", json={"thread_id": "big", "input": "x" * (1024 * 1024 + 10)}
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"
    bad_limit = await api.get("/v1/jobs", params={"limit": "abc"})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["details"]["fields"][0]["field"] == "query.limit"


async def test_request_id_is_reused_or_generated_and_echoed(api: httpx.AsyncClient) -> None:
    reused = await api.get("/v1/jobs", headers={"x-request-id": "req-abc.1:2"})
    assert reused.headers["x-request-id"] == "req-abc.1:2"
    assert reused.json()["request_id"] == "req-abc.1:2"
    replaced = await api.get("/v1/jobs", headers={"x-request-id": "has space"})
    assert replaced.headers["x-request-id"] != "has space"
    assert replaced.json()["request_id"] == replaced.headers["x-request-id"]
    error = await api.get("/v1/jobs/missing", headers={"x-request-id": "req-404"})
    assert error.json()["request_id"] == "req-404" == error.headers["x-request-id"]


async def test_same_key_same_payload_replays_the_stored_response(api: httpx.AsyncClient) -> None:
    first = await run(api, "idem-1", input={"a": 1}, idempotency_key="k1")
    second = await run(api, "idem-1", input={"a": 1}, idempotency_key="k1")
    assert second["idempotent_replay"] is True
    assert second["attempt_id"] == first["attempt_id"]
    assert second["trace"] == first["trace"]
    detail = await ok(api, "GET", "/v1/jobs/idem-1/detail")
    assert len(detail["attempts"]) == 1


async def test_same_key_different_payload_is_a_conflict(api: httpx.AsyncClient) -> None:
    await run(api, "idem-2", input="a", idempotency_key="k2")
    error = await fails(
        api,
        "POST",
        "/v1/jobs/run",
        409,
        {"thread_id": "idem-2", "input": "b", "idempotency_key": "k2"},
    )
    assert error["message"] == "idempotency_key already exists with different request payload"
    assert error["details"] == {"idempotency_key": "k2", "operation": "run"}


async def test_fifty_concurrent_identical_requests_create_one_job(api: httpx.AsyncClient) -> None:
    body = {"thread_id": "idem-race", "input": "x", "idempotency_key": "race-key"}
    responses = await asyncio.gather(*(api.post("/v1/jobs/run", json=body) for _ in range(50)))
    assert all(r.status_code == 200 for r in responses), [
        r.text for r in responses if r.status_code != 200
    ]
    fresh = [r for r in responses if r.json()["data"]["idempotent_replay"] is False]
    assert len(fresh) == 1
    detail = await ok(api, "GET", "/v1/jobs/idem-race/detail")
    assert len(detail["attempts"]) == 1


async def test_rerun_rules_active_finished_cancelled(api: httpx.AsyncClient) -> None:
    await run(api, "rerun")
    error = await fails(api, "POST", "/v1/jobs/run", 409, {"thread_id": "rerun"})
    assert "active run" in error["message"]
    dispatched = await poll(api)
    await ack(api, "w1", dispatched["attempt_id"], output={"done": True})
    assert await status_of(api, "rerun") == "completed"
    second = await run(api, "rerun", input="again")
    assert second["run_no"] == 2
    detail = await ok(api, "GET", "/v1/jobs/rerun/detail")
    assert [a["run_no"] for a in detail["attempts"]] == [1, 2]
    assert detail["status"] == "queued"
    await ok(api, "POST", "/v1/jobs/rerun/cancel", {"reason": "stop"})
    error = await fails(api, "POST", "/v1/jobs/run", 409, {"thread_id": "rerun"})
    assert error["message"] == "thread 'rerun' is cancelled"


async def test_list_filters_paginates_and_validates(api: httpx.AsyncClient) -> None:
    for index in range(5):
        await run(api, f"list-{index}")
    await ok(api, "POST", "/v1/jobs/list-0/cancel", {})
    page = await ok(api, "GET", "/v1/jobs", params={"limit": 2, "offset": 1})
    assert len(page["jobs"]) == 2
    assert page["total"] == 5
    cancelled = await ok(api, "GET", "/v1/jobs", params={"status": "cancelled"})
    assert [j["thread_id"] for j in cancelled["jobs"]] == ["list-0"]
    assert set(cancelled["jobs"][0]) >= {"thread_id", "status", "updated_at"}
    assert (await ok(api, "GET", "/v1/jobs", params={"limit": 1000}))["limit"] == 200
    for params in ({"limit": 0}, {"limit": -1}, {"offset": -1}, {"status": "bogus"}):
        await fails(api, "GET", "/v1/jobs", 400, params=params)


async def test_reads_of_an_unknown_thread(api: httpx.AsyncClient) -> None:
    error = await fails(api, "GET", "/v1/jobs/ghost", 404)
    assert error["code"] == "not_found"
    await fails(api, "GET", "/v1/jobs/ghost/detail", 404)
    assert (await ok(api, "GET", "/v1/jobs/ghost/history"))["history"] == []
    await fails(api, "GET", "/v1/jobs/ghost/timeline", 404)
    await fails(api, "GET", "/v1/jobs/ghost/timeline/export", 404)
    await fails(api, "GET", "/v1/jobs/ghost/checkpoints/cp-1", 404)
    await fails(api, "POST", "/v1/jobs/ghost/cancel", 404, {})


async def test_detail_history_timeline_and_checkpoint_follow_execution(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "reads", workflow="steps", input={"steps": 1})
    dispatched = await poll(api, workflows=["steps"])
    assert dispatched["decision"] == "dispatched"
    step = await ok(
        api,
        "POST",
        "/v1/workers/w1/report-step",
        {
            "attempt_id": dispatched["attempt_id"],
            "action_id": "step_1",
            "status": "completed",
            "dedupe_token": "d1",
            "checkpoint": {"state": {"steps": {"step_1": 1}}},
        },
    )
    assert step["status"] == "reported"
    detail = await ok(api, "GET", "/v1/jobs/reads/detail")
    assert detail["status"] == "running"
    assert detail["attempts"][0]["lease_holder"] == "w1"
    assert detail["attempts"][0]["status"] == "leased"
    assert detail["values"] == {"steps": {"step_1": 1}}
    assert [h["checkpoint_id"] for h in detail["history"]][-1] == step["checkpoint_id"]
    await ack(api, "w1", dispatched["attempt_id"], output={"ok": 1})
    state = await ok(api, "GET", "/v1/jobs/reads")
    assert state["status"] == "completed"
    assert state["output"] == {"ok": 1}
    timeline = await ok(api, "GET", "/v1/jobs/reads/timeline")
    events = [e["event_type"] for e in timeline["timeline"]]
    assert events == ["job_queued", "attempt_dispatched", "step_reported", "attempt_completed"]
    assert [e["seq"] for e in timeline["timeline"]] == [1, 2, 3, 4]
    export = await ok(api, "GET", "/v1/jobs/reads/timeline/export")
    assert len(export["history"]) == 2
    checkpoint = await ok(api, "GET", f"/v1/jobs/reads/checkpoints/{step['checkpoint_id']}")
    assert checkpoint["values"] == {"steps": {"step_1": 1}}
    assert export["observability"]["replay_cost"] == 2


async def test_cancel_persists_cancels_work_and_fences_the_lease(api: httpx.AsyncClient) -> None:
    await run(api, "cancel-me")
    dispatched = await poll(api)
    first = await ok(api, "POST", "/v1/jobs/cancel-me/cancel", {"reason": "operator said so"})
    assert first == {"thread_id": "cancel-me", "status": "cancelled", "reason": "operator said so"}
    again = await ok(api, "POST", "/v1/jobs/cancel-me/cancel", {"reason": "different"})
    assert again == first
    heartbeat = await fails(
        api, "POST", "/v1/workers/w1/heartbeat", 409, {"lease_id": dispatched["lease_id"]}
    )
    assert "cancelled" in heartbeat["message"]
    await fails(
        api,
        "POST",
        "/v1/workers/w1/ack",
        409,
        {"attempt_id": dispatched["attempt_id"], "terminal_status": "completed"},
    )
    detail = await ok(api, "GET", "/v1/jobs/cancel-me/detail")
    assert detail["status"] == "cancelled"
    assert detail["attempts"][0]["status"] == "cancelled"
    assert detail["attempts"][0]["leases"][0]["state"] == "revoked"


async def test_cancel_of_a_queued_job_removes_it_from_dispatch(api: httpx.AsyncClient) -> None:
    await run(api, "queued-cancel")
    await ok(api, "POST", "/v1/jobs/queued-cancel/cancel", {})
    assert (await poll(api))["decision"] == "noop"


async def test_cancelling_a_finished_job_is_a_conflict(api: httpx.AsyncClient) -> None:
    await run(api, "done")
    dispatched = await poll(api)
    await ack(api, "w1", dispatched["attempt_id"])
    error = await fails(api, "POST", "/v1/jobs/done/cancel", 409, {})
    assert "already finished" in error["message"]


async def test_nul_characters_in_text_fields_are_400_and_json_values_keep_them(
    api: httpx.AsyncClient,
) -> None:
    # PostgreSQL text cannot hold U+0000; both backends refuse it in declared string fields
    # before anything is written, and keep it inside JSON values, which are stored escaped.
    job = await run(api, "nul-1", input={"text": "a\u0000b"})
    assert (await ok(api, "GET", "/v1/jobs/nul-1"))["input"] == {"text": "a\u0000b"}
    error = await fails(api, "POST", "/v1/jobs/nul-1/cancel", 400, {"reason": "x\u0000y"})
    assert error["details"]["fields"] == [
        {"field": "reason", "message": "Value error, must not contain NUL (U+0000) characters"}
    ]
    assert (await ok(api, "GET", "/v1/jobs/nul-1"))["status"] == "queued"
    error = await fails(
        api, "POST", "/v1/workers/poll", 400, {"worker_id": "w", "workflows": ["\u0000"]}
    )
    assert error["details"]["fields"][0]["field"] == "workflows"
    error = await fails(api, "GET", "/v1/audit/logs", 400, params={"resource_id": "nul\u0000"})
    assert "NUL" in error["message"]
    error = await fails(api, "GET", "/v1/interrupts", 400, params={"run_id": "\u0000"})
    assert error["message"] == "run_id must not contain NUL (U+0000) characters"
    # An ack's error is stored as JSON: a NUL in its message is kept, and the batch goes through.
    lease = await poll(api)
    await ack(api, "w1", lease["attempt_id"], status="failed", error={"message": "bad\u0000byte"})
    assert (await ok(api, "GET", "/v1/jobs/nul-1/detail"))["error"]["message"] == "bad\u0000byte"
    assert job["attempt_id"]


async def test_a_new_thread_is_one_self_committing_statement_on_postgres(
    api: httpx.AsyncClient,
) -> None:
    rt = runtime_of(api)
    sent: list[tuple[str, object]] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "runtime_api_keys" not in statement:  # the once-a-second check for managed keys
            sent.append((statement, conn.get_execution_options().get("isolation_level")))

    engine = rt.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await run(api, "one-statement")
        fresh = list(sent)
        await ack(api, "w1", (await poll(api))["attempt_id"])
        sent.clear()
        rerun = await run(api, "one-statement")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert rerun["run_no"] == 2
    written = " ".join(statement for statement, _ in fresh)
    assert "INSERT INTO runtime_jobs" in written
    assert "INSERT INTO runtime_audit_logs" in written
    if rt.db.is_postgres:
        # Job, checkpoint, attempt, event, NOTIFY and the audit row: one statement, no BEGIN.
        assert [level for _, level in fresh] == ["AUTOCOMMIT"]
        # An existing thread: the statement writes nothing, and a transaction does the rerun.
        assert sent[0][1] == "AUTOCOMMIT"
        assert {level for _, level in sent[1:]} == {None}
    report = await ok(api, "GET", "/v1/audit/verify")
    assert report["ok"] is True
    assert report["rows_checked"] == 2
