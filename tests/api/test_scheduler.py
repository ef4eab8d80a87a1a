"""Worker protocol on both backends: dispatch order, caps, leases, fencing, retries, DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import update

from oris.domain.clock import now_ms
from oris.services import maintenance
from oris.services.runtime import Runtime
from oris.store.tables import attempts, leases
from tests.api.helpers import ack, fails, ok, poll, run, status_of


def runtime_of(api: httpx.AsyncClient) -> Runtime:
    """The runtime behind the in-process app."""
    transport = api._transport
    assert isinstance(transport, httpx.ASGITransport)
    rt: Runtime = transport.app.state.runtime  # type: ignore[attr-defined]
    return rt


async def force_expire(rt: Runtime, lease_id: str, seconds_ago: float = 20) -> None:
    """Move a lease's expiry into the past, as if its worker had stopped heartbeating."""
    async with rt.db.write() as conn:
        await conn.execute(
            update(leases)
            .where(leases.c.lease_id == lease_id)
            .values(lease_expires_at_ms=now_ms() - int(seconds_ago * 1000))
        )


async def test_poll_decisions_carry_every_upstream_field(api: httpx.AsyncClient) -> None:
    empty = await poll(api)
    assert empty["decision"] == "noop"
    assert empty["worker_limit"] == 8 and empty["tenant_limit"] == 8
    for key in ("attempt_id", "lease_id", "lease_expires_at", "reason", "tenant_id", "trace"):
        assert key in empty and empty[key] is None
    await run(api, "p1", input={"x": 1}, tenant_id="acme")
    dispatched = await poll(api)
    assert dispatched["decision"] == "dispatched"
    assert dispatched["tenant_id"] == "acme"
    assert dispatched["worker_active_leases"] == 0
    assert dispatched["thread_id"] == "p1"
    assert dispatched["workflow"] == "echo"
    assert dispatched["attempt_no"] == 1
    assert dispatched["input"] == {"x": 1}
    assert dispatched["checkpoint"]["state"] == {}
    assert dispatched["has_resume_value"] is False
    assert dispatched["lease_ttl_seconds"] == 30
    assert dispatched["trace"]["parent_span_id"] is not None
    assert len(dispatched["dispatches"]) == 1
    assert await status_of(api, "p1") == "running"


async def test_priority_then_fifo_order(api: httpx.AsyncClient) -> None:
    for name, priority in [("low-a", 0), ("high", 50), ("low-b", 0), ("mid", 10), ("low-c", 0)]:
        await run(api, name, priority=priority)
    order = []
    for _ in range(5):
        order.append((await poll(api, max_active_leases=8))["thread_id"])
    assert order == ["high", "mid", "low-a", "low-b", "low-c"]


async def test_caps_may_be_lowered_never_raised(api: httpx.AsyncClient) -> None:
    for index in range(3):
        await run(api, f"cap-{index}")
    assert (await poll(api, max_active_leases=1))["decision"] == "dispatched"
    lowered = await poll(api, max_active_leases=1)
    assert lowered["decision"] == "backpressure"
    assert lowered["reason"] == "worker_limit"
    assert lowered["worker_limit"] == 1 and lowered["worker_active_leases"] == 1
    raised = await poll(api, max_active_leases=10_000)
    assert raised["worker_limit"] == 8


async def test_a_throttled_tenant_never_blocks_others(api: httpx.AsyncClient) -> None:
    for index in range(20):
        await run(api, f"noisy-{index}", tenant_id="noisy")
    await run(api, "quiet-1", tenant_id="quiet")
    first = await poll(api, "w1", tenant_max_active_leases=2, limit=2)
    assert [d["tenant_id"] for d in first["dispatches"]] == ["noisy", "noisy"]
    second = await poll(api, "w2", tenant_max_active_leases=2)
    assert second["decision"] == "dispatched"
    assert second["thread_id"] == "quiet-1"
    third = await poll(api, "w3", tenant_max_active_leases=2)
    assert third["decision"] == "backpressure"
    assert third["reason"] == "tenant_limit"
    assert third["tenant_id"] == "noisy"
    assert third["tenant_active_leases"] == 2 and third["tenant_limit"] == 2


async def test_batch_poll_dispatches_many_and_respects_caps(api: httpx.AsyncClient) -> None:
    for index in range(12):
        await run(api, f"batch-{index}")
    batch = await poll(api, limit=10, max_active_leases=6)
    assert batch["decision"] == "dispatched"
    assert len(batch["dispatches"]) == 6
    assert batch["attempt_id"] == batch["dispatches"][0]["attempt_id"]
    assert len({d["lease_id"] for d in batch["dispatches"]}) == 6


async def test_workflow_filter_and_reserved_workflows(api: httpx.AsyncClient) -> None:
    await run(api, "wf-echo")
    await run(api, "wf-smoke", workflow="oris.smoke")
    assert (await poll(api, "w1", workflows=["steps"]))["decision"] == "noop"
    plain = await poll(api, "w2")
    assert plain["thread_id"] == "wf-echo"
    assert (await poll(api, "w3"))["decision"] == "noop"
    assert (await poll(api, "w4", workflows=["oris.smoke"]))["thread_id"] == "wf-smoke"


async def test_heartbeat_rules(api: httpx.AsyncClient) -> None:
    await run(api, "hb")
    lease = await poll(api, "owner")
    renewed = await ok(
        api,
        "POST",
        "/v1/workers/owner/heartbeat",
        {"lease_id": lease["lease_id"], "lease_ttl_seconds": 60},
    )
    assert renewed["lease_id"] == lease["lease_id"]
    assert renewed["version"] == 2
    extended = await ok(
        api, "POST", "/v1/workers/owner/extend-lease", {"lease_id": lease["lease_id"]}
    )
    assert extended["version"] == 3
    await fails(api, "POST", "/v1/workers/owner/heartbeat", 404, {"lease_id": "lease-nope"})
    foreign = await fails(
        api, "POST", "/v1/workers/intruder/heartbeat", 409, {"lease_id": lease["lease_id"]}
    )
    assert foreign["message"] == "lease ownership mismatch"
    assert "owner" not in str(foreign["details"])
    for ttl in (0, 3601):
        await fails(
            api,
            "POST",
            "/v1/workers/owner/heartbeat",
            400,
            {"lease_id": lease["lease_id"], "lease_ttl_seconds": ttl},
        )
    await force_expire(runtime_of(api), lease["lease_id"])
    expired = await fails(
        api, "POST", "/v1/workers/owner/heartbeat", 409, {"lease_id": lease["lease_id"]}
    )
    assert expired["message"] == "lease expired"


async def test_concurrent_heartbeats_conflict_with_409_never_500(api: httpx.AsyncClient) -> None:
    await run(api, "hb-race")
    lease = await poll(api, "owner")
    responses = await asyncio.gather(
        *(
            api.post("/v1/workers/owner/heartbeat", json={"lease_id": lease["lease_id"]})
            for _ in range(20)
        )
    )
    assert {r.status_code for r in responses} <= {200, 409}
    assert any(r.status_code == 200 for r in responses)


async def test_report_step_rules(api: httpx.AsyncClient) -> None:
    await run(api, "rs")
    lease = await poll(api, "owner")
    body = {
        "attempt_id": lease["attempt_id"],
        "action_id": "a",
        "status": "completed",
        "dedupe_token": "t1",
        "unknown": 1,
    }
    assert (await ok(api, "POST", "/v1/workers/owner/report-step", body))["status"] == "reported"
    assert (await ok(api, "POST", "/v1/workers/owner/report-step", body))[
        "status"
    ] == "reported_idempotent"
    changed = await fails(
        api, "POST", "/v1/workers/owner/report-step", 409, {**body, "status": "failed"}
    )
    assert "dedupe_token 't1' already used" in changed["message"]
    await fails(
        api,
        "POST",
        "/v1/workers/owner/report-step",
        404,
        {**body, "attempt_id": "attempt-nope", "dedupe_token": "t2"},
    )
    await fails(api, "POST", "/v1/workers/other/report-step", 409, {**body, "dedupe_token": "t3"})
    await fails(
        api,
        "POST",
        "/v1/workers/owner/report-step",
        409,
        {**body, "dedupe_token": "t4", "lease_id": "lease-wrong"},
    )
    for field in ("attempt_id", "action_id", "status", "dedupe_token"):
        error = await fails(api, "POST", "/v1/workers/owner/report-step", 400, {**body, field: " "})
        assert error["message"] == f"{field} must not be empty"


async def test_ack_rules_and_repeat(api: httpx.AsyncClient) -> None:
    await run(api, "ack")
    lease = await poll(api, "owner")
    await fails(
        api,
        "POST",
        "/v1/workers/owner/ack",
        404,
        {"attempt_id": "attempt-nope", "terminal_status": "completed"},
    )
    bad = await fails(
        api,
        "POST",
        "/v1/workers/owner/ack",
        400,
        {"attempt_id": lease["attempt_id"], "terminal_status": "done"},
    )
    assert bad["message"].startswith("terminal_status must be one of: completed|failed|cancelled")
    await fails(
        api,
        "POST",
        "/v1/workers/other/ack",
        409,
        {"attempt_id": lease["attempt_id"], "terminal_status": "completed"},
    )
    first = await ack(
        api, "owner", lease["attempt_id"], output={"r": 1}, lease_id=lease["lease_id"]
    )
    assert first["status"] == "completed"
    again = await ack(
        api, "owner", lease["attempt_id"], output={"r": 1}, lease_id=lease["lease_id"]
    )
    assert again == first
    await fails(
        api,
        "POST",
        "/v1/workers/owner/ack",
        409,
        {"attempt_id": lease["attempt_id"], "terminal_status": "failed"},
    )
    assert (await ok(api, "GET", "/v1/jobs/ack"))["output"] == {"r": 1}


async def test_fencing_a_late_owner_changes_nothing(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(api, "fence")
    old = await poll(api, "worker-a")
    await force_expire(rt, old["lease_id"])
    await maintenance.sweep(rt)
    new = await poll(api, "worker-b")
    assert new["attempt_id"] == old["attempt_id"]
    assert new["attempt_no"] == 2
    before = await ok(api, "GET", "/v1/jobs/fence/detail")
    for index in range(100):
        kind = index % 3
        if kind == 0:
            await fails(
                api, "POST", "/v1/workers/worker-a/heartbeat", 409, {"lease_id": old["lease_id"]}
            )
        elif kind == 1:
            await fails(
                api,
                "POST",
                "/v1/workers/worker-a/report-step",
                409,
                {
                    "attempt_id": old["attempt_id"],
                    "action_id": "x",
                    "status": "done",
                    "dedupe_token": f"late-{index}",
                },
            )
        else:
            await fails(
                api,
                "POST",
                "/v1/workers/worker-a/ack",
                409,
                {"attempt_id": old["attempt_id"], "terminal_status": "completed"},
            )
    after = await ok(api, "GET", "/v1/jobs/fence/detail")
    assert after["attempts"] == before["attempts"]
    assert after["status"] == "running"
    assert (await ack(api, "worker-b", new["attempt_id"]))["status"] == "completed"


async def test_sixteen_pollers_dispatch_each_attempt_exactly_once(api: httpx.AsyncClient) -> None:
    total = 500
    await asyncio.gather(*(run(api, f"c-{index}") for index in range(total)))
    seen: list[str] = []

    async def poller(worker: str) -> None:
        while True:
            data = await poll(api, worker, limit=5, max_active_leases=8)
            if data["decision"] == "noop":
                return
            if data["decision"] == "backpressure":
                continue
            for item in data["dispatches"]:
                seen.append(item["attempt_id"])
                await ack(api, worker, item["attempt_id"], lease_id=item["lease_id"])

    await asyncio.gather(*(poller(f"poller-{index}") for index in range(16)))
    assert len(seen) == total
    assert len(set(seen)) == total
    listing = await ok(api, "GET", "/v1/jobs", params={"status": "completed", "limit": 1})
    assert listing["total"] == total


async def test_retry_then_dead_letter_then_replay(api: httpx.AsyncClient) -> None:
    policy = {
        "strategy": "exponential",
        "backoff_ms": 1,
        "max_backoff_ms": 2,
        "multiplier": 3.0,
        "max_retries": 2,
    }
    await run(api, "retry", retry_policy=policy)
    lease = await poll(api)
    first = await ack(api, "w1", lease["attempt_id"], status="failed", error={"message": "boom"})
    assert first["status"] == "retry_scheduled"
    assert first["next_attempt_no"] == 2
    assert first["next_retry_at"]
    assert await status_of(api, "retry") == "retry_backoff"
    await asyncio.sleep(0.01)
    lease = await wait_for_dispatch(api)
    assert lease["attempt_no"] == 2
    second = await ack(api, "w1", lease["attempt_id"], status="failed")
    assert second["status"] == "retry_scheduled"
    await asyncio.sleep(0.01)
    lease = await wait_for_dispatch(api)
    final = await ack(
        api, "w1", lease["attempt_id"], status="failed", error={"message": "still boom"}
    )
    assert final["status"] == "failed"
    assert final["next_retry_at"] is None
    assert await status_of(api, "retry") == "failed"
    history = await ok(api, "GET", f"/v1/attempts/{lease['attempt_id']}/retries")
    assert history["current_status"] == "failed"
    assert [(h["retry_no"], h["attempt_no"], h["backoff_ms"]) for h in history["history"]] == [
        (1, 2, 1),
        (2, 3, 2),
    ]
    entry = await ok(api, "GET", f"/v1/dlq/{lease['attempt_id']}")
    assert entry["reason"] == "terminal_failed"
    assert entry["replay_status"] == "pending"
    assert entry["attempt_no"] == 3
    listing = await ok(api, "GET", "/v1/dlq", params={"status": "pending"})
    assert [e["attempt_id"] for e in listing["entries"]] == [lease["attempt_id"]]
    replays = await asyncio.gather(
        *(api.post(f"/v1/dlq/{lease['attempt_id']}/replay") for _ in range(20))
    )
    assert sorted(r.status_code for r in replays) == [200] + [409] * 19
    assert await status_of(api, "retry") == "queued"
    again = await wait_for_dispatch(api)
    assert again["attempt_id"] == lease["attempt_id"]
    retried = await ack(api, "w1", again["attempt_id"], status="failed")
    assert retried["status"] == "retry_scheduled", "a DLQ replay grants a fresh retry budget"
    assert (await ok(api, "GET", f"/v1/dlq/{lease['attempt_id']}"))["replay_count"] == 1


async def wait_for_dispatch(api: httpx.AsyncClient, worker: str = "w1") -> dict[str, Any]:
    """Poll until something is dispatched (retries become due after their backoff)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = await poll(api, worker)
        if data["decision"] == "dispatched":
            return data
        await asyncio.sleep(0.01)
    raise AssertionError("nothing was dispatched")


async def test_permanent_error_skips_retries(api: httpx.AsyncClient) -> None:
    await run(api, "perm", retry_policy={"strategy": "fixed", "backoff_ms": 1, "max_retries": 5})
    lease = await poll(api)
    result = await ack(
        api,
        "w1",
        lease["attempt_id"],
        status="failed",
        error={"message": "bad input", "retryable": False},
    )
    assert result["status"] == "failed"
    assert (await ok(api, "GET", f"/v1/dlq/{lease['attempt_id']}"))["error"][
        "message"
    ] == "bad input"


async def test_ack_policy_overrides_the_job_policy(api: httpx.AsyncClient) -> None:
    await run(
        api, "override", retry_policy={"strategy": "fixed", "backoff_ms": 1, "max_retries": 5}
    )
    lease = await poll(api)
    result = await ack(
        api,
        "w1",
        lease["attempt_id"],
        status="failed",
        retry_policy={"strategy": "fixed", "backoff_ms": 1, "max_retries": 0},
    )
    assert result["status"] == "failed"


async def test_maintenance_requeues_expired_leases_without_any_poll(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(api, "expire")
    lease = await poll(api, "gone")
    await force_expire(rt, lease["lease_id"])
    result = await maintenance.sweep(rt)
    assert result.leases_expired == 1
    assert await status_of(api, "expire") == "queued"
    assert (await maintenance.sweep(rt)).leases_expired == 0
    timeline = await ok(api, "GET", "/v1/jobs/expire/timeline")
    assert "lease_expired" in [e["event_type"] for e in timeline["timeline"]]
    recovered = await poll(api, "next")
    assert recovered["attempt_id"] == lease["attempt_id"]
    timeline = await ok(api, "GET", "/v1/jobs/expire/timeline")
    assert timeline["timeline"][-1]["event_type"] == "attempt_recovered"


async def test_a_recovered_attempt_resumes_from_its_newest_checkpoint(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "resume-own", input={"n": 1})
    await run(api, "resume-fresh", input={"n": 2})
    first = await poll(api, "crashed", limit=2)
    by_thread = {item["thread_id"]: item for item in first["dispatches"]}
    start = by_thread["resume-own"]["checkpoint"]
    assert start["state"] == {} and by_thread["resume-fresh"]["checkpoint"]["state"] == {}
    lease = by_thread["resume-own"]
    for token, state in (("s1", {"done": ["a"]}), ("s2", {"done": ["a", "b"]})):
        body = {
            "attempt_id": lease["attempt_id"],
            "action_id": token,
            "status": "completed",
            "dedupe_token": token,
            "checkpoint": {"step": token, "state": state},
        }
        reported = await ok(api, "POST", "/v1/workers/crashed/report-step", body)
    rt = runtime_of(api)
    for item in first["dispatches"]:
        await force_expire(rt, item["lease_id"])
    assert (await maintenance.sweep(rt)).leases_expired == 2
    again = await poll(api, "next", limit=2)
    by_thread = {item["thread_id"]: item for item in again["dispatches"]}
    assert by_thread["resume-own"]["attempt_id"] == lease["attempt_id"]
    assert by_thread["resume-own"]["checkpoint"] == {
        "checkpoint_id": reported["checkpoint_id"],
        "state": {"done": ["a", "b"]},
    }
    assert by_thread["resume-own"]["input"] == {"n": 1}
    # The other attempt reported nothing: it starts again from its job's first checkpoint.
    assert by_thread["resume-fresh"]["checkpoint"]["state"] == {}
    assert by_thread["resume-fresh"]["checkpoint"]["checkpoint_id"] != start["checkpoint_id"]
    assert by_thread["resume-fresh"]["input"] == {"n": 2}


async def age_current_lease(rt: Runtime, attempt_id: str, milliseconds: int) -> None:
    """Pretend the current lease started ``milliseconds`` earlier (no sleeping)."""
    async with rt.db.write() as conn:
        await conn.execute(
            update(attempts)
            .where(attempts.c.attempt_id == attempt_id)
            .values(started_at_ms=attempts.c.started_at_ms - milliseconds)
        )


async def test_execution_timeout_counts_from_the_current_lease(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(api, "timeout", timeout_policy={"timeout_ms": 60_000, "on_timeout_status": "failed"})
    lease = await poll(api)
    assert (await maintenance.sweep(rt)).attempts_timed_out == 0
    await age_current_lease(rt, lease["attempt_id"], 61_000)
    assert (await maintenance.sweep(rt)).attempts_timed_out == 1
    assert await status_of(api, "timeout") == "failed"
    entry = await ok(api, "GET", f"/v1/dlq/{lease['attempt_id']}")
    assert entry["reason"] == "execution_timeout"
    await fails(api, "POST", "/v1/workers/w1/heartbeat", 409, {"lease_id": lease["lease_id"]})


async def test_a_recovered_attempt_gets_a_fresh_timeout(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(
        api, "timeout-fresh", timeout_policy={"timeout_ms": 60_000, "on_timeout_status": "failed"}
    )
    first = await poll(api, "a")
    await age_current_lease(rt, first["attempt_id"], 50_000)
    await force_expire(rt, first["lease_id"])
    await maintenance.sweep(rt)
    await poll(api, "b")
    assert (await maintenance.sweep(rt)).attempts_timed_out == 0
    assert await status_of(api, "timeout-fresh") == "running"


async def test_timeout_to_failed_consults_the_retry_policy(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(
        api,
        "timeout-retry",
        timeout_policy={"timeout_ms": 60_000, "on_timeout_status": "failed"},
        retry_policy={"strategy": "fixed", "backoff_ms": 1, "max_retries": 1},
    )
    lease = await poll(api)
    await age_current_lease(rt, lease["attempt_id"], 61_000)
    await maintenance.sweep(rt)
    assert await status_of(api, "timeout-retry") == "retry_backoff"


async def test_timeout_to_cancelled(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(
        api,
        "timeout-cancel",
        timeout_policy={"timeout_ms": 60_000, "on_timeout_status": "cancelled"},
    )
    lease = await poll(api)
    await age_current_lease(rt, lease["attempt_id"], 61_000)
    await maintenance.sweep(rt)
    assert await status_of(api, "timeout-cancel") == "cancelled"


async def test_upstream_metrics_scenario(api: httpx.AsyncClient) -> None:
    """oris-behavior.md §9.1, reproduced figure for figure."""
    rt = runtime_of(api)
    await run(api, "m-1")
    await run(api, "m-2")
    first = await poll(api, "worker-1")
    assert (await poll(api, "worker-1", max_active_leases=1))["reason"] == "worker_limit"
    await fails(api, "POST", "/v1/workers/worker-2/heartbeat", 409, {"lease_id": first["lease_id"]})
    await force_expire(rt, first["lease_id"])
    await maintenance.sweep(rt)
    recovered = await poll(api, "worker-2", max_active_leases=1)
    assert recovered["attempt_id"] == first["attempt_id"]
    await ack(api, "worker-2", recovered["attempt_id"], status="failed")
    text = (await api.get("/metrics")).text
    expected = [
        "oris_runtime_queue_depth 1",
        "oris_runtime_lease_operations_total 3",
        "oris_runtime_lease_conflicts_total 1",
        "oris_runtime_lease_conflict_rate 0.333333",
        'oris_runtime_backpressure_total{reason="worker_limit"} 1',
        'oris_runtime_backpressure_total{reason="tenant_limit"} 0',
        'oris_runtime_terminal_acks_total{status="failed"} 1',
        'oris_runtime_terminal_acks_total{status="completed"} 0',
        "oris_runtime_terminal_error_rate 1.000000",
        "oris_runtime_dispatch_latency_ms_count 2",
        "oris_runtime_recovery_latency_ms_count 1",
    ]
    lines = set(text.splitlines())
    for line in expected:
        assert line in lines, line
