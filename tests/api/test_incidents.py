"""Incident freeze on both backends: risky actions need an audited override while open."""

from __future__ import annotations

import httpx

from tests.api.helpers import ack, fails, ok, poll, run


async def _failed_job(api: httpx.AsyncClient, thread_id: str) -> str:
    await run(api, thread_id)
    lease = await poll(api)
    await ack(api, "w1", lease["attempt_id"], status="failed")
    return str(lease["attempt_id"])


async def test_open_incident_freezes_replays_and_resumes_until_overridden(
    api: httpx.AsyncClient,
) -> None:
    attempt_id = await _failed_job(api, "frozen")
    opened = await ok(api, "POST", "/v1/incidents", {"reason": "terminal error rate spike"})
    assert opened["status"] == "open"
    await fails(api, "POST", "/v1/incidents", 409, {"reason": "second"})
    health = (await api.get("/healthz")).json()
    assert health["incident"]["incident_id"] == opened["incident_id"]
    assert "oris_runtime_open_incidents 1" in (await api.get("/metrics")).text

    error = await fails(api, "POST", f"/v1/dlq/{attempt_id}/replay", 409)
    assert error["code"] == "incident_freeze"
    assert error["details"]["incident_id"] == opened["incident_id"]
    error = await fails(api, "POST", "/v1/jobs/frozen/replay", 409, {})
    assert error["code"] == "incident_freeze"

    replayed = await ok(
        api,
        "POST",
        f"/v1/dlq/{attempt_id}/replay",
        headers={"x-oris-incident-override": "verified fix deployed"},
    )
    assert replayed["status"] == "requeued"
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"action": "dlq.replay"}))["logs"]
    assert logs[0]["result"] == "success"
    assert logs[0]["details"]["freeze_override_reason"] == "verified fix deployed"
    assert [r["status_code"] for r in logs] == [200, 409]

    closed = await ok(api, "POST", "/v1/incidents/close", {"reason": "mitigated"})
    assert closed["status"] == "closed" and closed["close_reason"] == "mitigated"
    await fails(api, "POST", "/v1/incidents/close", 409, {})
    listing = await ok(api, "GET", "/v1/incidents")
    assert listing["current"] is None and len(listing["incidents"]) == 1
    actions = [r["action"] for r in (await ok(api, "GET", "/v1/audit/logs"))["logs"]]
    assert "incident.open" in actions and "incident.close" in actions


async def test_resume_with_a_new_payload_is_frozen_but_a_repeat_is_not(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "approve", workflow="approval")
    lease = await poll(api, workflows=["approval"])
    await ack(api, "w1", lease["attempt_id"], status="interrupted", interrupt={"value": "ok?"})
    interrupt_id = (await ok(api, "GET", "/v1/interrupts"))["interrupts"][0]["interrupt_id"]
    first = await ok(api, "POST", f"/v1/interrupts/{interrupt_id}/resume", {"value": "yes"})
    await ok(api, "POST", "/v1/incidents", {"reason": "investigating"})
    repeat = await ok(api, "POST", f"/v1/interrupts/{interrupt_id}/resume", {"value": "yes"})
    assert repeat["idempotent_replay"] is True and repeat["attempt_id"] == first["attempt_id"]
    second = await poll(api, workflows=["approval"])
    await ack(api, "w1", second["attempt_id"], status="interrupted", interrupt={"value": "again?"})
    error = await fails(api, "POST", "/v1/jobs/approve/resume", 409, {"value": "go"})
    assert error["code"] == "incident_freeze"
    resumed = await ok(
        api,
        "POST",
        "/v1/jobs/approve/resume",
        {"value": "go", "override_reason": "customer waiting"},
    )
    assert resumed["status"] == "queued"


async def test_opening_needs_a_reason(api: httpx.AsyncClient) -> None:
    await fails(api, "POST", "/v1/incidents", 400, {"reason": "  "})
    await fails(api, "POST", "/v1/incidents", 400, {})
