"""Cancel racing the worker protocol: one lock order, no deadlock, no 5xx, every cancel audited.

The races run the real API calls concurrently (``asyncio.gather`` on the in-process app, which
has a connection pool, so the transactions really overlap on PostgreSQL). On SQLite the single
writer serialises them; the final states must be as consistent there too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from oris.domain.errors import ErrorCode, TransientConflict
from oris.services import jobs as job_service
from oris.services.context import RequestContext
from oris.services.runtime import Runtime
from oris.store.tables import attempts, jobs, leases
from tests.api.helpers import ok, poll, run
from tests.api.test_scheduler import runtime_of

ROUNDS = 25


@pytest.fixture
def no_deadlocks(caplog: pytest.LogCaptureFixture) -> Any:
    """The races must not even need the retry: the lock order alone keeps them apart."""
    caplog.set_level(logging.WARNING, logger="oris.transactions")
    yield
    retried = [r.getMessage() for r in caplog.records if r.name == "oris.transactions"]
    assert retried == []


async def _call(api: httpx.AsyncClient, method: str, path: str, body: Any) -> httpx.Response:
    response = await api.request(method, path, json=body)
    assert response.status_code < 500, response.text
    return response


async def _final(rt: Runtime, thread_id: str) -> tuple[str, list[str], list[str]]:
    """The job's status, its attempts' statuses and its leases' states."""
    async with rt.db.read() as conn:
        job_status = (
            await conn.execute(select(jobs.c.status).where(jobs.c.thread_id == thread_id))
        ).scalar_one()
        attempt_ids = [
            row[0]
            for row in await conn.execute(
                select(attempts.c.attempt_id).where(attempts.c.run_id == thread_id)
            )
        ]
        attempt_statuses = [
            str(row[0])
            for row in await conn.execute(
                select(attempts.c.status).where(attempts.c.run_id == thread_id)
            )
        ]
        lease_states = [
            str(row[0])
            for row in await conn.execute(
                select(leases.c.state).where(leases.c.attempt_id.in_(attempt_ids))
            )
        ]
    return str(job_status), attempt_statuses, lease_states


async def _cancel_audits(api: httpx.AsyncClient, thread_id: str) -> list[dict[str, Any]]:
    data = await ok(
        api,
        "GET",
        "/v1/audit/logs",
        params={"action": "job.cancel", "resource_id": thread_id, "limit": 50},
    )
    return [row for row in data["logs"] if row["result"] == "success"]


def _cancel(api: httpx.AsyncClient, thread_id: str) -> Any:
    return _call(api, "POST", f"/v1/jobs/{thread_id}/cancel", {"reason": "race"})


@pytest.mark.usefixtures("no_deadlocks")
async def test_cancel_races_ack(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    for round_no in range(ROUNDS):
        thread_id = f"race-ack-{round_no}"
        await run(api, thread_id)
        leased = await poll(api, "w-ack")
        assert leased["decision"] == "dispatched"
        cancelled, acked = await asyncio.gather(
            _cancel(api, thread_id),
            _call(
                api,
                "POST",
                "/v1/workers/w-ack/ack",
                {
                    "attempt_id": leased["attempt_id"],
                    "lease_id": leased["lease_id"],
                    "terminal_status": "completed",
                    "output": {"round": round_no},
                },
            ),
        )
        job_status, attempt_statuses, lease_states = await _final(rt, thread_id)
        # Exactly one of them wins; the other is refused with a 409.
        assert sorted([cancelled.status_code, acked.status_code]) == [200, 409], (
            cancelled.text,
            acked.text,
        )
        if cancelled.status_code == 200:
            assert (job_status, attempt_statuses, lease_states) == (
                "cancelled",
                ["cancelled"],
                ["revoked"],
            )
        else:
            assert (job_status, attempt_statuses, lease_states) == (
                "completed",
                ["completed"],
                ["released"],
            )
        audits = await _cancel_audits(api, thread_id)
        assert len(audits) == (1 if cancelled.status_code == 200 else 0)


@pytest.mark.usefixtures("no_deadlocks")
async def test_cancel_races_poll(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    for round_no in range(ROUNDS):
        thread_id = f"race-poll-{round_no}"
        await run(api, thread_id)
        cancelled, polled = await asyncio.gather(
            _cancel(api, thread_id),
            _call(api, "POST", "/v1/workers/poll", {"worker_id": "w-poll"}),
        )
        assert cancelled.status_code == 200, cancelled.text
        assert polled.status_code == 200, polled.text
        job_status, attempt_statuses, lease_states = await _final(rt, thread_id)
        assert job_status == "cancelled"
        assert attempt_statuses == ["cancelled"]
        # Dispatched before the cancel: the lease is revoked; after it: never leased.
        decision = polled.json()["data"]["decision"]
        assert lease_states == (["revoked"] if decision == "dispatched" else [])
        assert len(await _cancel_audits(api, thread_id)) == 1


@pytest.mark.usefixtures("no_deadlocks")
async def test_cancel_races_heartbeat(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    for round_no in range(ROUNDS):
        thread_id = f"race-hb-{round_no}"
        await run(api, thread_id)
        leased = await poll(api, "w-hb")
        assert leased["decision"] == "dispatched"
        cancelled, beat = await asyncio.gather(
            _cancel(api, thread_id),
            _call(
                api,
                "POST",
                "/v1/workers/w-hb/heartbeat",
                {"lease_id": leased["lease_id"], "lease_ttl_seconds": 30},
            ),
        )
        assert cancelled.status_code == 200, cancelled.text
        assert beat.status_code in (200, 409), beat.text
        if beat.status_code == 409:
            assert beat.json()["error"]["code"] == ErrorCode.CONFLICT.value
        assert await _final(rt, thread_id) == ("cancelled", ["cancelled"], ["revoked"])
        assert len(await _cancel_audits(api, thread_id)) == 1


@pytest.mark.usefixtures("no_deadlocks")
async def test_cancel_races_acks_carried_by_a_poll(api: httpx.AsyncClient) -> None:
    """The poll's completions and its claim share one transaction; the cancel targets the
    job being completed."""
    rt = runtime_of(api)
    for round_no in range(ROUNDS):
        thread_id = f"race-pa-{round_no}"
        await run(api, thread_id)
        leased = await poll(api, "w-pa")
        assert leased["decision"] == "dispatched"
        await run(api, f"{thread_id}-next")
        cancelled, polled = await asyncio.gather(
            _cancel(api, thread_id),
            _call(
                api,
                "POST",
                "/v1/workers/poll",
                {
                    "worker_id": "w-pa",
                    "acks": [
                        {
                            "attempt_id": leased["attempt_id"],
                            "lease_id": leased["lease_id"],
                            "terminal_status": "completed",
                        }
                    ],
                },
            ),
        )
        assert polled.status_code == 200, polled.text
        [acked] = polled.json()["data"]["acks"]
        ack_status = 200 if acked["ok"] else acked["status"]
        assert sorted([cancelled.status_code, ack_status]) == [200, 409], (
            cancelled.text,
            acked,
        )
        expected = "cancelled" if cancelled.status_code == 200 else "completed"
        assert (await _final(rt, thread_id))[0] == expected
        assert len(await _cancel_audits(api, thread_id)) == (expected == "cancelled")
        # The poll's claim went ahead: the next job was dispatched to it.
        assert polled.json()["data"]["thread_id"] == f"{thread_id}-next"
        await ok(api, "POST", f"/v1/jobs/{thread_id}-next/cancel", {})


@pytest.mark.usefixtures("no_deadlocks")
async def test_cancel_races_interrupt_resume(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    for round_no in range(ROUNDS):
        thread_id = f"race-ir-{round_no}"
        await run(api, thread_id)
        leased = await poll(api, "w-ir")
        interrupted = await ok(
            api,
            "POST",
            "/v1/workers/w-ir/ack",
            {
                "attempt_id": leased["attempt_id"],
                "terminal_status": "interrupted",
                "interrupt": {"value": {"ask": "ok?"}},
            },
        )
        cancelled, resumed = await asyncio.gather(
            _cancel(api, thread_id),
            _call(
                api,
                "POST",
                f"/v1/interrupts/{interrupted['interrupt_id']}/resume",
                {"value": "yes"},
            ),
        )
        assert cancelled.status_code == 200, cancelled.text
        assert resumed.status_code in (200, 409), resumed.text
        job_status, attempt_statuses, _ = await _final(rt, thread_id)
        assert job_status == "cancelled"
        # Resumed first: the new attempt is cancelled; cancelled first: the interrupted one.
        expected = ["interrupted", "cancelled"] if resumed.status_code == 200 else ["cancelled"]
        assert sorted(attempt_statuses) == sorted(expected)
        assert len(await _cancel_audits(api, thread_id)) == 1


async def test_deadlock_inside_a_service_transaction_is_retried(
    api: httpx.AsyncClient,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real deadlock: the cancel's transaction locks the job, then waits for the attempt,
    which another transaction holds while it waits for the job. PostgreSQL aborts one of the
    two; the cancel, if it is the victim, is run again and succeeds, and answers 200."""
    if backend != "postgres":
        pytest.skip("row locks and deadlock detection are PostgreSQL's")
    rt = runtime_of(api)
    await run(api, "dl-1")
    leased = await poll(api, "w-dl")
    attempt_id = leased["attempt_id"]
    job_locked = asyncio.Event()
    release = asyncio.Event()
    original = job_service.cancel_job_in
    calls = 0

    async def cancel_job_in(conn: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The cancel holds the job row; let the other side take the attempt, then both
            # wait for each other.
            job_locked.set()
            await release.wait()
        await original(conn, *args, **kwargs)

    monkeypatch.setattr(job_service, "cancel_job_in", cancel_job_in)

    async def opposite_order() -> str:
        try:
            async with rt.db.write() as conn:
                # This side waits longer before it checks for a deadlock, so the cancel's
                # session is the one that finds it and is rolled back.
                await conn.execute(text("SET LOCAL deadlock_timeout = '10s'"))
                await conn.execute(
                    text("SELECT 1 FROM runtime_attempts WHERE attempt_id = :a FOR UPDATE"),
                    {"a": attempt_id},
                )
                await job_locked.wait()
                release.set()
                await conn.execute(
                    text("SELECT 1 FROM runtime_jobs WHERE thread_id = 'dl-1' FOR UPDATE")
                )
            return "committed"
        except TransientConflict:
            return "aborted"

    ctx = RequestContext(request_id="req-dl", actor=_admin())
    answer, other = await asyncio.gather(
        job_service.cancel(rt.db, ctx, "dl-1", "deadlock"), opposite_order()
    )
    assert answer["status"] == "cancelled"
    # The cancel's session found the deadlock first, was rolled back and ran again.
    assert (other, calls) == ("committed", 2)
    assert [r.getMessage() for r in caplog.records if r.name == "oris.transactions"] == [
        "transaction rolled back by the database; running it again"
    ]
    assert await _final(rt, "dl-1") == ("cancelled", ["cancelled"], ["revoked"])


def _admin() -> Any:
    from oris.services.context import Actor, Role

    return Actor(actor_type="api_key", actor_id="k-test", role=Role.ADMIN)
