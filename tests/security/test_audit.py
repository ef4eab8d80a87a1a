"""The audit log: complete, written with the change it records, tamper-evident."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text, update

from oris.services import audit
from oris.services.runtime import Runtime
from oris.store.tables import audit_logs
from tests.api.helpers import ack, fails, ok, poll, run
from tests.api.test_scheduler import runtime_of


async def test_a_scripted_session_leaves_exactly_one_row_per_action(api: httpx.AsyncClient) -> None:
    await run(api, "a1", workflow="approval", idempotency_key="k-a1")
    await run(
        api, "a1", workflow="approval", idempotency_key="k-a1"
    )  # idempotent replay: no new change
    await fails(api, "POST", "/v1/jobs/run", 409, {"thread_id": "a1", "workflow": "approval"})
    await fails(api, "POST", "/v1/jobs/run", 400, {"thread_id": "bad id"})
    lease = await poll(api, workflows=["approval"])
    await ack(api, "w1", lease["attempt_id"], status="interrupted", interrupt={"value": "ok?"})
    interrupt_id = (await ok(api, "GET", "/v1/interrupts"))["interrupts"][0]["interrupt_id"]
    await ok(
        api,
        "POST",
        f"/v1/interrupts/{interrupt_id}/resume",
        {"value": "yes"},
        headers={"x-request-id": "resume-1"},
    )
    await fails(api, "POST", f"/v1/interrupts/{interrupt_id}/resume", 409, {"value": "no"})
    await ok(api, "POST", "/v1/jobs/a1/cancel", {"reason": "enough"})
    logs = (await ok(api, "GET", "/v1/audit/logs"))["logs"]
    rows = [(r["action"], r["result"], r["status_code"], r["resource_id"]) for r in reversed(logs)]
    assert rows == [
        ("job.run", "success", 200, "a1"),
        ("job.run", "success", 200, "a1"),
        ("job.run", "error", 409, "a1"),
        ("job.run", "error", 400, "bad id"),
        ("interrupt.resume", "success", 200, interrupt_id),
        ("interrupt.resume", "error", 409, interrupt_id),
        ("job.cancel", "success", 200, "a1"),
    ]
    assert logs[-2]["details"]["idempotent_replay"] is True
    resume_row = next(r for r in logs if r["request_id"] == "resume-1")
    assert resume_row["actor_type"] == "anonymous"
    assert resume_row["source_addr"] == "127.0.0.1"
    assert resume_row["details"]["interrupt_id"] == interrupt_id
    by_action = await ok(
        api, "GET", "/v1/audit/logs", params={"action": "job.run", "result": "error", "limit": 1}
    )
    assert len(by_action["logs"]) == 1 and by_action["next_before_id"] is not None
    older = await ok(
        api,
        "GET",
        "/v1/audit/logs",
        params={"action": "job.run", "result": "error", "before_id": by_action["next_before_id"]},
    )
    assert [r["status_code"] for r in older["logs"]] == [409]
    await fails(api, "GET", "/v1/audit/logs", 400, params={"from_ms": 5, "to_ms": 1})


async def _break_audit_inserts(rt: Runtime) -> None:
    async with rt.db.write() as conn:
        if rt.db.is_postgres:
            await conn.execute(
                text(
                    "CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER audit_down BEFORE INSERT ON runtime_audit_logs FOR EACH ROW EXECUTE FUNCTION audit_down()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER audit_down BEFORE INSERT ON runtime_audit_logs BEGIN SELECT RAISE(ABORT, 'audit down'); END"
                )
            )


async def test_no_audit_row_means_no_change(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await run(api, "keep")
    await _break_audit_inserts(rt)
    response = await api.post("/v1/jobs/run", json={"thread_id": "never"})
    assert response.status_code == 503
    assert (
        response.json()["error"]["message"]
        == "the audit log could not be written; the change was not applied"
    )
    cancel = await api.post("/v1/jobs/keep/cancel", json={})
    assert cancel.status_code == 503
    await fails(api, "GET", "/v1/jobs/never", 404)
    assert (await ok(api, "GET", "/v1/jobs/keep"))["status"] == "queued"


async def test_the_hash_chain_names_the_first_altered_row(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    for index in range(5):
        await run(api, f"chain-{index}")
    report = await ok(api, "GET", "/v1/audit/verify")
    assert report.pop("anchor")["last_audit_id"] == 0
    assert report == {"ok": True, "rows_checked": 5, "first_bad_audit_id": None, "problem": None}
    logs = (await ok(api, "GET", "/v1/audit/logs"))["logs"]
    target = sorted(r["audit_id"] for r in logs)[2]
    async with rt.db.write() as conn:
        await conn.execute(
            update(audit_logs).where(audit_logs.c.audit_id == target).values(resource_id="forged")
        )
    broken = await audit.verify_chain(rt.db)
    assert not broken.ok
    assert broken.first_bad_audit_id == target
    assert broken.problem == "row content does not match its hash"


async def test_concurrent_writers_keep_one_unbroken_chain(api: httpx.AsyncClient) -> None:
    # On PostgreSQL each row is linked by one statement that takes the chain lock and reads the
    # head after it is granted; concurrent submits must still form a single chain.
    await asyncio.gather(*(run(api, f"conc-{index}") for index in range(24)))
    reasons = ["plain", "naïve — ünïcode ✓", 'quote " and \\ backslash', "tab\tand\nnewline"]
    await asyncio.gather(
        *(
            ok(api, "POST", f"/v1/jobs/conc-{index}/cancel", {"reason": reason})
            for index, reason in enumerate(reasons)
        )
    )
    report = await ok(api, "GET", "/v1/audit/verify")
    assert report.pop("anchor")["last_audit_id"] == 0
    assert report == {"ok": True, "rows_checked": 28, "first_bad_audit_id": None, "problem": None}
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"action": "job.cancel"}))["logs"]
    assert sorted(row["details"]["reason"] for row in logs) == sorted(reasons)


async def test_a_refused_request_with_an_overlong_resource_id_keeps_the_chain_intact(
    api: httpx.AsyncClient,
) -> None:
    await run(api, "long-1")
    long_id = "x" * 300
    await fails(api, "POST", f"/v1/jobs/{long_id}/cancel", 400, {})
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"action": "job.cancel"}))["logs"]
    assert [row["resource_id"] for row in logs] == ["x" * 256]
    report = await ok(api, "GET", "/v1/audit/verify")
    assert report["ok"] is True
    assert report["rows_checked"] == 2
