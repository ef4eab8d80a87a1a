"""``oris.client.AsyncClient`` against the real API in-process (both backends): typed results,
one exception type per error code, and what ``wait`` does with each way a job ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from oris.api.app import create_app
from oris.client import (
    AsyncClient,
    ConflictError,
    IncidentFreezeError,
    InvalidArgumentError,
    JobCancelled,
    JobFailed,
    JobSpec,
    NotFoundError,
    SubmitManyError,
    WaitTimeout,
)
from oris.client.errors import ERRORS_BY_CODE, ApiError, api_error
from oris.config import ServerSettings
from oris.domain.errors import ErrorCode
from tests.api.helpers import ack, poll


@pytest.fixture
async def client(settings: ServerSettings) -> AsyncIterator[tuple[AsyncClient, httpx.AsyncClient]]:
    app = create_app(settings, run_maintenance=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        oris = AsyncClient("http://oris.test", transport=transport)
        async with httpx.AsyncClient(transport=transport, base_url="http://oris.test") as raw:
            yield oris, raw
        await oris.aclose()


def test_every_api_error_code_has_its_exception_type() -> None:
    assert set(ERRORS_BY_CODE) == {code.value for code in ErrorCode}
    for code, kind in ERRORS_BY_CODE.items():
        error = api_error(400, code, "m", "r")
        assert type(error) is kind and isinstance(error, ApiError)
    assert isinstance(api_error(409, "incident_freeze", "m", None), ConflictError)
    assert type(api_error(418, "teapot", "m", None)) is ApiError


async def test_submit_get_list_and_the_typed_errors(
    client: tuple[AsyncClient, httpx.AsyncClient],
) -> None:
    oris, _ = client
    queued = await oris.submit("c-1", {"a": 1}, workflow="etl", tenant_id="acme", priority=5)
    assert (queued.thread_id, queued.status, queued.workflow) == ("c-1", "queued", "etl")
    assert queued.attempt_id and not queued.idempotent_replay
    repeat = await oris.submit("c-2", workflow="etl", idempotency_key="k-1")
    again = await oris.submit("c-2", workflow="etl", idempotency_key="k-1")
    assert again.idempotent_replay and again.attempt_id == repeat.attempt_id
    job = await oris.get("c-1")
    assert (job.status, job.input, job.tenant_id, job.priority) == ("queued", {"a": 1}, "acme", 5)
    assert job.created_at is not None and not job.finished

    with pytest.raises(NotFoundError) as missing:
        await oris.get("nope")
    assert missing.value.status == 404 and missing.value.request_id
    with pytest.raises(InvalidArgumentError):
        await oris.submit("bad id!")
    with pytest.raises(InvalidArgumentError):
        await oris.list(cursor="garbage")

    page = await oris.list(workflow="etl", order="created", limit=1)
    assert page.total == 2 and page.next_cursor and len(page.jobs) == 1
    seen = [job.thread_id async for job in oris.iter_jobs(workflow="etl", page_size=1)]
    assert sorted(seen) == ["c-1", "c-2"]

    with pytest.raises(SubmitManyError) as stopped:
        await oris.submit_many(
            [JobSpec("m-1"), {"thread_id": "bad id!"}, JobSpec("m-3")],
        )
    assert stopped.value.index == 1
    assert [item.thread_id for item in stopped.value.submitted] == ["m-1"]
    assert isinstance(stopped.value.error, InvalidArgumentError)
    with pytest.raises(NotFoundError):
        await oris.get("m-3")


async def test_submit_later_and_list_by_schedule(
    client: tuple[AsyncClient, httpx.AsyncClient],
) -> None:
    oris, raw = client
    later = await oris.submit("c-later", delay_ms=3_600_000)
    assert later.status == "scheduled"
    at = datetime.now(UTC) + timedelta(hours=2)
    assert (await oris.submit("c-at", run_at=at)).status == "scheduled"
    assert (await oris.get("c-at")).status == "scheduled"
    with pytest.raises(InvalidArgumentError):
        await oris.submit("c-both", run_at=at, delay_ms=5)
    created = await raw.post(
        "/v1/schedules", json={"schedule_id": "hourly", "workflow": "echo", "every_seconds": 3600}
    )
    assert created.status_code == 200, created.text
    assert (await raw.post("/v1/schedules/hourly/trigger")).status_code == 200
    page = await oris.list(schedule_id="hourly")
    assert [job.thread_id.startswith("hourly") for job in page.jobs] == [True]


async def test_wait_returns_completed_and_raises_on_every_other_end(
    client: tuple[AsyncClient, httpx.AsyncClient],
) -> None:
    oris, raw = client
    await oris.submit("w-done")
    lease = await poll(raw)
    await ack(raw, "w1", lease["attempt_id"], output={"ok": True})
    done = await oris.wait("w-done", timeout=5)
    assert done.status == "completed" and done.output == {"ok": True}

    await oris.submit("w-failed")
    lease = await poll(raw)
    await ack(raw, "w1", lease["attempt_id"], status="failed", error={"message": "boom"})
    with pytest.raises(JobFailed) as failed:
        await oris.wait("w-failed", timeout=5)
    assert failed.value.job is not None and failed.value.job.error["message"] == "boom"

    await oris.submit("w-slow")
    with pytest.raises(WaitTimeout) as timed_out:
        await oris.wait("w-slow", timeout=0.2)
    assert timed_out.value.job is not None and timed_out.value.job.status == "queued"
    assert isinstance(timed_out.value, TimeoutError)

    cancelled = await oris.cancel("w-slow", reason="not needed")
    assert (cancelled.status, cancelled.reason) == ("cancelled", "not needed")
    with pytest.raises(JobCancelled) as stopped:
        await oris.wait("w-slow", timeout=5)
    assert stopped.value.job is not None and stopped.value.job.cancel_reason == "not needed"
    with pytest.raises(ConflictError):
        await oris.cancel("w-done")


async def test_interrupts_resume_reject_and_replay_under_the_freeze(
    client: tuple[AsyncClient, httpx.AsyncClient],
) -> None:
    oris, raw = client
    for thread_id in ("i-yes", "i-no"):
        await oris.submit(thread_id, workflow="approval")
        lease = await poll(raw, workflows=["approval"])
        await ack(raw, "w1", lease["attempt_id"], status="interrupted", interrupt={"value": "ok?"})
    waiting = await oris.wait("i-yes", timeout=5, until_interrupted=True)
    assert waiting.status == "interrupted"
    [pending] = await oris.interrupts(thread_id="i-yes")
    assert pending.value == "ok?" and pending.status == "pending"
    resumed = await oris.resume(pending, "yes")
    assert resumed.status == "queued" and resumed.interrupt_id == pending.interrupt_id
    [other] = await oris.interrupts(thread_id="i-no")
    rejected = await oris.reject(other.interrupt_id, "no")
    assert (rejected.thread_id, rejected.status) == ("i-no", "cancelled")

    lease = await poll(raw, workflows=["approval"])
    await ack(raw, "w1", lease["attempt_id"], output={"approved": "yes"})
    await oris.wait("i-yes", timeout=5)
    await raw.post("/v1/incidents", json={"reason": "investigating"})
    with pytest.raises(IncidentFreezeError):
        await oris.replay("i-yes")
    replayed = await oris.replay("i-yes", override_reason="checked")
    assert replayed.status == "queued" and replayed.checkpoint_id
