"""Retention on both backends: exactly the expired finished jobs go, with every row they own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, or_, select, update

from oris.config import ServerSettings
from oris.domain.clock import now_ms
from oris.observability.metrics import RuntimeMetrics
from oris.services import maintenance
from oris.services.bootstrap import open_database
from oris.services.runtime import Runtime
from oris.store.tables import audit_logs, dead_letters, jobs, metadata
from tests.api.helpers import ack, fails, ok, poll, run, status_of
from tests.api.test_scheduler import runtime_of

DAY_MS = 86_400_000
# Columns through which a row belongs to a job, in any table; the check below goes by these
# names over the whole schema, not by the purge's own list of tables.
OWNER_COLUMNS = ("thread_id", "run_id", "attempt_id")
JOB_FREE_TABLES = {"runtime_audit_logs", "runtime_audit_anchor"}


async def finish(
    api: httpx.AsyncClient, thread_id: str, status: str = "completed", **fields: Any
) -> str:
    """Run a job through one attempt with a step report; returns the attempt id."""
    await run(api, thread_id, **fields)
    lease = await poll(api, "w-ret")
    assert lease["thread_id"] == thread_id, lease
    step = {
        "attempt_id": lease["attempt_id"],
        "action_id": "step-1",
        "status": "completed",
        "dedupe_token": f"{thread_id}-1",
        "checkpoint": {"state": {"done": 1}, "step": "one"},
    }
    await ok(api, "POST", "/v1/workers/w-ret/report-step", step)
    extra: dict[str, Any] = {}
    if status == "interrupted":
        extra["interrupt"] = {"value": "approve?"}
    if status == "failed":
        extra["error"] = {"message": "boom"}
    await ack(api, "w-ret", lease["attempt_id"], status=status, **extra)
    return str(lease["attempt_id"])


async def age(rt: Runtime, thread_id: str, days: float) -> None:
    """Make a job look as if it last changed ``days`` ago."""
    async with rt.db.write() as conn:
        await conn.execute(
            update(jobs)
            .where(jobs.c.thread_id == thread_id)
            .values(updated_at_ms=now_ms() - int(days * DAY_MS))
        )


async def attempts_of(rt: Runtime, thread_ids: set[str]) -> set[str]:
    """Attempt ids of these threads (read before a purge: afterwards they are gone too)."""
    table = metadata.tables["runtime_attempts"]
    async with rt.db.read() as conn:
        result = await conn.execute(
            select(table.c.attempt_id).where(table.c.run_id.in_(thread_ids))
        )
        return {str(row[0]) for row in result.all()}


async def owned_rows(
    rt: Runtime, thread_ids: set[str], attempt_ids: set[str] | None = None
) -> dict[str, int]:
    """Rows of every table that belong to these threads (directly or through an attempt)."""
    if attempt_ids is None:
        attempt_ids = await attempts_of(rt, thread_ids)
    counts: dict[str, int] = {}
    async with rt.db.read() as conn:
        for table in metadata.sorted_tables:
            if table.name in JOB_FREE_TABLES:
                continue
            conditions = [
                table.c[name].in_(attempt_ids if name == "attempt_id" else thread_ids)
                for name in OWNER_COLUMNS
                if name in table.c
            ]
            if not conditions:
                continue
            statement = select(func.count()).select_from(table).where(or_(*conditions))
            counts[table.name] = int((await conn.execute(statement)).scalar_one())
    return counts


async def survivors(rt: Runtime) -> set[str]:
    async with rt.db.read() as conn:
        return {str(row[0]) for row in (await conn.execute(select(jobs.c.thread_id))).all()}


@pytest.fixture
async def estate(api: httpx.AsyncClient) -> AsyncIterator[dict[str, set[str]]]:
    """Jobs in every state, old and new; yields which must go and which must stay."""
    rt = runtime_of(api)
    # Completed, with an idempotency key, a retry, a replay (replay record, second run).
    await run(api, "done-old", idempotency_key="key-done-old", retry_policy={
        "strategy": "fixed", "backoff_ms": 1, "max_retries": 1,
    })  # fmt: skip
    lease = await poll(api, "w-ret")
    await ack(api, "w-ret", lease["attempt_id"], status="failed", error={"message": "again"})
    await asyncio.sleep(0.01)
    deadline = asyncio.get_running_loop().time() + 10
    while (lease := await poll(api, "w-ret"))["decision"] != "dispatched":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await ack(api, "w-ret", lease["attempt_id"], status="completed", output={"ok": 1})
    await ok(api, "POST", "/v1/jobs/done-old/replay", {})
    lease = await poll(api, "w-ret")
    await ack(api, "w-ret", lease["attempt_id"], status="completed")
    assert await status_of(api, "done-old") == "completed"
    await finish(api, "done-new")
    await run(api, "cancelled-old")
    await ok(api, "POST", "/v1/jobs/cancelled-old/cancel", {"reason": "test"})
    # A dead letter replayed, then completed: its DLQ row goes with the job.
    dead = await finish(api, "replayed-dlq-old", "failed", retry_policy={
        "strategy": "fixed", "backoff_ms": 1, "max_retries": 0,
    })  # fmt: skip
    await ok(api, "POST", f"/v1/dlq/{dead}/replay")
    lease = await poll(api, "w-ret")
    await ack(api, "w-ret", lease["attempt_id"], status="completed")
    # Failed and waiting in the DLQ: kept however old.
    await finish(api, "failed-pending-old", "failed", retry_policy={
        "strategy": "fixed", "backoff_ms": 1, "max_retries": 0,
    })  # fmt: skip
    # Failed with its dead letter resolved (as a discard would leave it).
    resolved = await finish(api, "failed-resolved-old", "failed", retry_policy={
        "strategy": "fixed", "backoff_ms": 1, "max_retries": 0,
    })  # fmt: skip
    async with rt.db.write() as conn:
        await conn.execute(
            update(dead_letters)
            .where(dead_letters.c.attempt_id == resolved)
            .values(replay_status="discarded")
        )
    await finish(api, "interrupted-old", "interrupted")
    await run(api, "running-old")
    assert (await poll(api, "w-ret"))["thread_id"] == "running-old"
    await run(api, "queued-old")
    await run(api, "scheduled-old")
    async with rt.db.write() as conn:
        await conn.execute(
            update(jobs).where(jobs.c.thread_id == "scheduled-old").values(status="scheduled")
        )
    gone = {"done-old", "cancelled-old", "replayed-dlq-old", "failed-resolved-old"}
    kept = {
        "done-new",
        "failed-pending-old",
        "interrupted-old",
        "queued-old",
        "running-old",
        "scheduled-old",
    }
    assert await survivors(rt) == gone | kept
    for thread_id in gone | kept - {"done-new"}:
        await age(rt, thread_id, 45)
    yield {"gone": gone, "kept": kept}


async def test_retention_deletes_exactly_the_expired_finished_jobs_and_all_their_rows(
    api: httpx.AsyncClient, estate: dict[str, set[str]]
) -> None:
    rt = runtime_of(api)
    before_kept = await owned_rows(rt, estate["kept"])
    gone_attempts = await attempts_of(rt, estate["gone"])
    before_gone = await owned_rows(rt, estate["gone"], gone_attempts)
    for table in (
        "runtime_attempts",
        "runtime_leases",
        "runtime_checkpoints",
        "runtime_timeline_events",
        "runtime_step_reports",
        "runtime_attempt_retry_history",
        "runtime_dead_letters",
        "runtime_replay_effects",
        "runtime_idempotency",
    ):
        assert before_gone[table] > 0, f"the scenario leaves no row in {table}"
    assert (await owned_rows(rt, {"interrupted-old"}))["runtime_interrupts"] == 1
    audit_before = await _audit_count(rt)

    result = await maintenance.sweep(rt)

    assert result.jobs_purged == {"completed": 2, "cancelled": 1, "failed": 1}
    assert await survivors(rt) == estate["kept"]
    assert set((await owned_rows(rt, estate["gone"], gone_attempts)).values()) == {0}
    assert await owned_rows(rt, estate["kept"]) == before_kept
    assert (await maintenance.sweep(rt)).jobs_purged == {}
    metrics = (await api.get("/metrics")).text
    assert 'oris_runtime_purged_jobs_total{status="completed"} 2' in metrics
    assert 'oris_runtime_purged_jobs_total{status="failed"} 1' in metrics
    # The audit log is not purged; each purged batch adds a row.
    assert await _audit_count(rt) == audit_before + 3
    assert (await ok(api, "GET", "/v1/audit/verify"))["ok"] is True
    logs = await ok(api, "GET", "/v1/audit/logs", params={"action": "job.purge"})
    assert sorted(row["details"]["count"] for row in logs["logs"]) == [1, 1, 2]


async def _audit_count(rt: Runtime) -> int:
    async with rt.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(audit_logs))).scalar_one())


async def test_zero_keeps_forever_and_young_jobs_stay(
    api: httpx.AsyncClient, make_settings: Any
) -> None:
    rt = runtime_of(api)
    await finish(api, "young")
    await finish(api, "ancient")
    await age(rt, "ancient", 400)
    forever = Runtime(
        db=rt.db,
        settings=rt.settings.model_copy(update={"retention_completed_seconds": 0.0}),
        metrics=RuntimeMetrics(),
    )
    assert (await maintenance.sweep(forever)).jobs_purged == {}
    assert await survivors(rt) == {"young", "ancient"}
    assert (await maintenance.sweep(rt)).jobs_purged == {"completed": 1}
    assert await survivors(rt) == {"young"}


async def test_purge_dry_run_changes_nothing_and_a_real_purge_is_audited(
    api: httpx.AsyncClient, estate: dict[str, set[str]]
) -> None:
    rt = runtime_of(api)
    everything = estate["gone"] | estate["kept"]
    before = await owned_rows(rt, everything)
    audit_before = await _audit_count(rt)
    body = {"status": "completed", "older_than_seconds": 86_400, "dry_run": True}
    preview = await ok(api, "POST", "/v1/jobs/purge", {**body, "include_rows": True})
    assert preview["count"] == preview["matched"] == 2
    assert set(preview["thread_ids"]) == {"done-old", "replayed-dlq-old"}
    assert preview["more"] is False
    lines = [json.loads(json.dumps(line)) for line in preview["jobs"]]
    done = next(line for line in lines if line["thread_id"] == "done-old")
    assert done["tables"]["runtime_jobs"][0]["status"] == "completed"
    assert len(done["tables"]["runtime_attempts"]) == 2
    assert done["tables"]["runtime_idempotency"][0]["idempotency_key"] == "key-done-old"
    assert await owned_rows(rt, everything) == before
    assert await survivors(rt) == everything

    purged = await ok(
        api, "POST", "/v1/jobs/purge", {**body, "dry_run": False, "thread_ids": ["done-old"]}
    )
    assert (purged["count"], purged["thread_ids"]) == (1, ["done-old"])
    assert await survivors(rt) == everything - {"done-old"}
    logs = await ok(api, "GET", "/v1/audit/logs", params={"action": "job.purge"})
    assert [row["details"]["count"] for row in logs["logs"]] == [1]
    assert await _audit_count(rt) == audit_before + 1

    # Live work is refused, whatever it is asked to purge.
    for status in ("queued", "running", "interrupted", "scheduled", "nope"):
        error = await fails(
            api, "POST", "/v1/jobs/purge", 400, {"status": status, "older_than_seconds": 0}
        )
        assert "never purged" in error["message"]
    ids = ["queued-old", "running-old", "interrupted-old", "failed-pending-old"]
    for status in ("completed", "cancelled", "failed"):
        nothing = await ok(
            api,
            "POST",
            "/v1/jobs/purge",
            {"status": status, "older_than_seconds": 0, "thread_ids": ids},
        )
        assert nothing["count"] == 0
    assert set(ids) <= await survivors(rt)
    for bad in (
        {"status": "completed"},
        {"status": "completed", "older_than_seconds": -1},
        {"status": "completed", "older_than_seconds": "7d"},
        {"status": "completed", "older_than_seconds": 1, "limit": 1001},
        {"status": "completed", "older_than_seconds": 1, "include_rows": True},
    ):
        await fails(api, "POST", "/v1/jobs/purge", 400, bad)


async def test_only_an_admin_may_purge(make_settings: Any) -> None:
    from oris.api.app import create_app
    from tests.support import lifespan_client

    settings: ServerSettings = make_settings(api_auth_bearer_token="root-token")
    app = create_app(settings, run_maintenance=False)
    async for client in lifespan_client(app):
        admin = {"authorization": "Bearer root-token"}
        key = await ok(client, "POST", "/v1/keys", {"role": "operator"}, headers=admin)
        operator = {"x-api-key-id": key["key_id"], "x-api-key": key["secret"]}
        body = {"status": "completed", "older_than_seconds": 0}
        await fails(client, "POST", "/v1/jobs/purge", 403, body, headers=operator)
        await fails(
            client, "POST", "/v1/audit/archive", 403, {"before_ms": 1, "dry_run": True},
            headers=operator,
        )  # fmt: skip
        await ok(client, "POST", "/v1/jobs/purge", body, headers=admin)
        denied = await ok(
            client, "GET", "/v1/audit/logs", params={"result": "denied"}, headers=admin
        )
        assert {row["action"] for row in denied["logs"]} == {"job.purge", "audit.archive"}


async def test_two_replicas_purge_concurrently_without_errors(
    api: httpx.AsyncClient, settings: ServerSettings
) -> None:
    rt = runtime_of(api)
    total = 24
    for index in range(total):
        await run(api, f"many-{index}")
        await ok(api, "POST", f"/v1/jobs/many-{index}/cancel", {})
        await age(rt, f"many-{index}", 10)
    await run(api, "live")
    doomed = {f"many-{index}" for index in range(total)}
    doomed_attempts = await attempts_of(rt, doomed)
    small = settings.model_copy(update={"retention_batch_size": 3})
    replicas = [
        Runtime(db=open_database(small), settings=small, metrics=RuntimeMetrics()) for _ in range(2)
    ]
    try:

        async def keep_sweeping(replica: Runtime) -> int:
            purged = 0
            for _ in range(total):
                purged += (await maintenance.sweep(replica)).jobs_purged.get("cancelled", 0)
            return purged

        counts = await asyncio.gather(*(keep_sweeping(replica) for replica in replicas))
    finally:
        for replica in replicas:
            await replica.db.dispose()
    assert sum(counts) == total, counts
    assert await survivors(rt) == {"live"}
    assert set((await owned_rows(rt, doomed, doomed_attempts)).values()) == {0}
