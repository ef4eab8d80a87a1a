"""Bulk cancel and bulk DLQ replay on both backends: filters, dry runs, the freeze, the audit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from oris.domain.clock import now_ms
from oris.domain.paging import parse_time_bound
from tests.api.helpers import ack, fails, ok, poll, run

OVERRIDE = {"x-oris-incident-override": "verified fix deployed"}


async def _dead_letter(
    api: httpx.AsyncClient, thread_id: str, workflow: str, tenant_id: str | None = None
) -> str:
    await run(api, thread_id, workflow=workflow, tenant_id=tenant_id)
    lease = await poll(api, workflows=[workflow])
    assert lease["thread_id"] == thread_id
    await ack(api, "w1", lease["attempt_id"], status="failed", error={"message": "boom"})
    return str(lease["attempt_id"])


async def _audit(api: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (
        await ok(api, "GET", "/v1/audit/logs", params={"action": action})
    )["logs"]
    return logs


async def _statuses(api: httpx.AsyncClient, thread_ids: list[str]) -> dict[str, str]:
    return {t: (await ok(api, "GET", f"/v1/jobs/{t}"))["status"] for t in thread_ids}


async def test_bulk_cancel_dry_run_changes_nothing_and_a_real_run_is_audited_once(
    api: httpx.AsyncClient,
) -> None:
    for index in range(4):
        await run(api, f"etl-{index}", workflow="etl", tenant_id="acme")
    await run(api, "etl-other-tenant", workflow="etl", tenant_id="globex")
    await run(api, "report-1", workflow="report", tenant_id="acme")
    await run(api, "etl-done", workflow="etl", tenant_id="acme")
    lease = await poll(api, workflows=["etl"])
    assert lease["thread_id"] == "etl-0"  # running now: still cancellable
    everything = [f"etl-{i}" for i in range(4)] + ["etl-other-tenant", "report-1", "etl-done"]
    before = await _statuses(api, everything)

    body = {"workflow": "etl", "tenant_id": "acme", "dry_run": True}
    preview = await ok(api, "POST", "/v1/jobs/cancel", body)
    expected = ["etl-0", "etl-1", "etl-2", "etl-3", "etl-done"]
    assert preview["dry_run"] is True
    assert preview["count"] == 5 and preview["thread_ids"] == expected
    assert preview["more"] is False
    assert await _statuses(api, everything) == before
    assert await _audit(api, "job.cancel_bulk") == []
    assert await _audit(api, "job.cancel") == []

    limited = await ok(api, "POST", "/v1/jobs/cancel", {**body, "limit": 2})
    assert limited["thread_ids"] == ["etl-0", "etl-1"] and limited["more"] is True

    done = await ok(
        api,
        "POST",
        "/v1/jobs/cancel",
        {"workflow": "etl", "tenant_id": "acme", "reason": "bad deploy"},
    )
    assert done["dry_run"] is False
    assert done["count"] == 5 and done["thread_ids"] == expected and done["failed"] == []
    after = await _statuses(api, everything)
    assert {t for t, s in after.items() if s == "cancelled"} == set(expected)
    assert after["etl-other-tenant"] == "queued" and after["report-1"] == "queued"

    rows = await _audit(api, "job.cancel_bulk")
    assert len(rows) == 1
    assert rows[0]["result"] == "success"
    assert rows[0]["details"]["count"] == 5
    assert rows[0]["details"]["thread_ids"] == expected
    assert rows[0]["details"]["filter"]["workflow"] == "etl"
    singles = await _audit(api, "job.cancel")
    assert sorted(r["resource_id"] for r in singles) == expected
    assert {r["request_id"] for r in singles} == {rows[0]["request_id"]}

    # Nothing live matches any more.
    again = await ok(api, "POST", "/v1/jobs/cancel", {"workflow": "etl", "tenant_id": "acme"})
    assert again["count"] == 0 and again["thread_ids"] == []


async def test_bulk_cancel_selects_by_status_time_and_ids(api: httpx.AsyncClient) -> None:
    await run(api, "early")
    middle = await ok(api, "GET", "/v1/jobs/early")
    early_ms = parse_time_bound("t", middle["created_at"])
    assert early_ms is not None
    while now_ms() <= early_ms:  # the next job must be created in a later millisecond
        await asyncio.sleep(0.001)
    await run(api, "late-1")
    await run(api, "late-2")
    after_early = middle["created_at"]
    preview = await ok(
        api, "POST", "/v1/jobs/cancel", {"created_after": after_early, "dry_run": True}
    )
    assert preview["thread_ids"] == ["late-1", "late-2"]
    by_ids = await ok(
        api,
        "POST",
        "/v1/jobs/cancel",
        {"thread_ids": ["late-2", "early", "missing"], "dry_run": True},
    )
    assert by_ids["thread_ids"] == ["early", "late-2"]
    by_status = await ok(api, "POST", "/v1/jobs/cancel", {"status": "queued", "dry_run": True})
    assert by_status["count"] == 3


async def test_bulk_cancel_takes_scheduled_jobs_and_selects_by_schedule(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "later", delay_ms=3_600_000)
    await run(api, "now")
    assert (await ok(api, "GET", "/v1/jobs/later"))["status"] == "scheduled"
    by_status = await ok(api, "POST", "/v1/jobs/cancel", {"status": "scheduled", "dry_run": True})
    assert by_status["thread_ids"] == ["later"]
    await ok(
        api,
        "POST",
        "/v1/schedules",
        {"schedule_id": "nightly", "workflow": "echo", "every_seconds": 3600},
    )
    await ok(api, "POST", "/v1/schedules/nightly/trigger")
    by_schedule = await ok(
        api, "POST", "/v1/jobs/cancel", {"schedule_id": "nightly", "dry_run": True}
    )
    assert by_schedule["count"] == 1 and by_schedule["thread_ids"][0].startswith("nightly")
    cancelled = await ok(api, "POST", "/v1/jobs/cancel", {"workflow": "echo"})
    assert cancelled["count"] == 3
    statuses = await _statuses(api, ["later", "now", by_schedule["thread_ids"][0]])
    assert set(statuses.values()) == {"cancelled"}


async def test_bulk_cancel_refuses_bad_selections(api: httpx.AsyncClient) -> None:
    await run(api, "keep")
    error = await fails(api, "POST", "/v1/jobs/cancel", 400, {})
    assert error["code"] == "invalid_argument" and "at least one filter" in error["message"]
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"workflow": "echo", "limit": 10_001})
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"workflow": "echo", "limit": 0})
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"status": "completed"})
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"created_after": "yesterday"})
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"thread_ids": ["bad id!"]})
    await fails(api, "POST", "/v1/jobs/cancel", 400, {"workflow": "echo", "dry_run": "yes"})
    assert (await ok(api, "GET", "/v1/jobs/keep"))["status"] == "queued"
    refused = await _audit(api, "job.cancel_bulk")
    assert refused and all(r["result"] == "error" and r["status_code"] == 400 for r in refused)


async def test_bulk_dlq_replay_dry_run_then_real_run(api: httpx.AsyncClient) -> None:
    first = await _dead_letter(api, "pay-1", "payments", "acme")
    second = await _dead_letter(api, "pay-2", "payments", "acme")
    await _dead_letter(api, "mail-1", "mail", "acme")
    await _dead_letter(api, "pay-3", "payments", "globex")

    preview = await ok(
        api,
        "POST",
        "/v1/dlq/replay",
        {"workflow": "payments", "tenant_id": "acme", "dry_run": True},
    )
    assert preview["count"] == 2 and preview["attempt_ids"] == [first, second]
    pending = await ok(api, "GET", "/v1/dlq", params={"status": "pending"})
    assert len(pending["entries"]) == 4
    assert await _audit(api, "dlq.replay_bulk") == []

    done = await ok(api, "POST", "/v1/dlq/replay", {"workflow": "payments", "tenant_id": "acme"})
    assert done["count"] == 2 and done["attempt_ids"] == [first, second]
    assert done["thread_ids"] == ["pay-1", "pay-2"] and done["failed"] == []
    assert await _statuses(api, ["pay-1", "pay-2", "mail-1", "pay-3"]) == {
        "pay-1": "queued",
        "pay-2": "queued",
        "mail-1": "failed",
        "pay-3": "failed",
    }
    rows = await _audit(api, "dlq.replay_bulk")
    assert len(rows) == 1 and rows[0]["details"]["count"] == 2
    assert rows[0]["details"]["attempt_ids"] == [first, second]
    singles = await _audit(api, "dlq.replay")
    assert sorted(r["resource_id"] for r in singles) == sorted([first, second])

    # Already replayed entries are not pending: a second run finds nothing.
    again = await ok(api, "POST", "/v1/dlq/replay", {"workflow": "payments", "tenant_id": "acme"})
    assert again["count"] == 0
    await fails(api, "POST", "/v1/dlq/replay", 400, {"status": "replayed"})
    await fails(api, "POST", "/v1/dlq/replay", 400, {"limit": 10_001})


async def test_bulk_dlq_replay_under_the_freeze(api: httpx.AsyncClient) -> None:
    attempts = [await _dead_letter(api, f"frozen-{i}", "payments") for i in range(3)]
    incident = await ok(api, "POST", "/v1/incidents", {"reason": "terminal error spike"})

    # A dry run changes nothing, so the freeze does not stop it.
    preview = await ok(api, "POST", "/v1/dlq/replay", {"workflow": "payments", "dry_run": True})
    assert preview["attempt_ids"] == attempts

    error = await fails(api, "POST", "/v1/dlq/replay", 409, {"workflow": "payments"})
    assert error["code"] == "incident_freeze"
    assert error["details"]["incident_id"] == incident["incident_id"]
    statuses = await _statuses(api, [f"frozen-{i}" for i in range(3)])
    assert set(statuses.values()) == {"failed"}
    refused = await _audit(api, "dlq.replay_bulk")
    assert [(r["result"], r["status_code"]) for r in refused] == [("error", 409)]

    done = await ok(
        api,
        "POST",
        "/v1/dlq/replay",
        {"workflow": "payments", "override_reason": "verified fix deployed"},
    )
    assert done["count"] == 3 and done["attempt_ids"] == attempts
    rows = await _audit(api, "dlq.replay_bulk")
    assert rows[0]["result"] == "success"
    assert rows[0]["details"]["count"] == 3
    assert rows[0]["details"]["attempt_ids"] == attempts
    assert rows[0]["details"]["freeze_override_reason"] == "verified fix deployed"
    assert rows[0]["details"]["incident_id"] == incident["incident_id"]
    singles = [r for r in await _audit(api, "dlq.replay") if r["result"] == "success"]
    assert len(singles) == 3
    assert all(r["details"]["freeze_override_reason"] == "verified fix deployed" for r in singles)


async def test_bulk_dlq_replay_override_by_header(api: httpx.AsyncClient) -> None:
    attempt = await _dead_letter(api, "by-header", "payments")
    await ok(api, "POST", "/v1/incidents", {"reason": "spike"})
    done = await ok(api, "POST", "/v1/dlq/replay", {"thread_ids": ["by-header"]}, headers=OVERRIDE)
    assert done["attempt_ids"] == [attempt]
