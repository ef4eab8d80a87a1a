"""Schedules on both backends: definition, ticks, pause/resume, overlap, catch-up, audit.

The app runs without its maintenance loop; each test drives the ticks itself with
``schedules.tick`` and waits on conditions (real time passes: ``every_seconds: 1`` ticks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from oris.domain.clock import now_ms
from oris.services import schedules
from oris.services.runtime import Runtime
from tests.api.helpers import ack, fails, ok, poll, status_of
from tests.api.test_scheduler import runtime_of

DEADLINE_SECONDS = 30.0


async def eventually(
    condition: Callable[[], Awaitable[Any]], message: str, rt: Runtime | None = None
) -> Any:
    """Tick (when ``rt`` is given) until ``condition`` holds, within a deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if rt is not None:
            await schedules.tick(rt)
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


async def schedule_jobs(api: httpx.AsyncClient, schedule_id: str) -> list[dict[str, Any]]:
    data = await ok(api, "GET", "/v1/jobs", params={"schedule_id": schedule_id, "limit": 200})
    jobs: list[dict[str, Any]] = data["jobs"]
    return sorted(jobs, key=lambda job: str(job["thread_id"]))


def tick_of(thread_id: str) -> datetime:
    stamp = thread_id.rsplit(":", 1)[1]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def body(schedule_id: str, **fields: Any) -> dict[str, Any]:
    return {"schedule_id": schedule_id, "workflow": "echo", **fields}


async def test_a_schedule_is_defined_once_and_redefining_it_differently_is_a_conflict(
    api: httpx.AsyncClient,
) -> None:
    created = await ok(
        api,
        "POST",
        "/v1/schedules",
        body("nightly", cron="30 2 * * *", timezone="Europe/Berlin", input={"k": 1}),
    )
    assert created["created"] is True
    assert created["status"] == "active"
    assert created["overlap"] == "skip" and created["catch_up"] == "latest"
    next_run = datetime.fromisoformat(created["next_run_at"])
    assert next_run > datetime.now(UTC)
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) in {(2, 30), (3, 0)}  # 03:00 on a spring-forward day
    again = await ok(
        api,
        "POST",
        "/v1/schedules",
        body("nightly", cron="30 2 * * *", timezone="Europe/Berlin", input={"k": 1}),
    )
    assert again["created"] is False
    assert again["next_run_at"] == created["next_run_at"]
    error = await fails(
        api,
        "POST",
        "/v1/schedules",
        409,
        body("nightly", cron="0 3 * * *", timezone="Europe/Berlin", input={"k": 1}),
    )
    assert error["code"] == "conflict"
    shown = await ok(api, "GET", "/v1/schedules/nightly")
    assert shown["cron"] == "30 2 * * *" and shown["last_thread_id"] is None
    listed = await ok(api, "GET", "/v1/schedules")
    assert [s["schedule_id"] for s in listed["schedules"]] == ["nightly"]
    assert listed["total"] == 1
    hourly = await ok(api, "POST", "/v1/schedules", body("hourly", cron="@hourly"))
    assert datetime.fromisoformat(hourly["next_run_at"]).minute == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give exactly one of cron and every_seconds"),
        ({"cron": "* * * * *", "every_seconds": 5}, "give exactly one of cron and every_seconds"),
        ({"every_seconds": 0}, "every_seconds must be between 1 and 31536000"),
        ({"cron": "* * *"}, "cron must have five fields: minute hour day month weekday"),
        ({"cron": "* * * * * *"}, "cron must have five fields: minute hour day month weekday"),
        ({"cron": "61 * * * *"}, "invalid cron expression: Bad minute"),
        ({"cron": "@sometimes"}, None),
        ({"every_seconds": 5, "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"every_seconds": 5, "timezone": "../etc/passwd"}, None),
        ({"every_seconds": 5, "overlap": "queue"}, "overlap must be one of: skip|allow"),
        ({"every_seconds": 5, "catch_up": "all"}, "catch_up must be one of: latest|none"),
        ({"every_seconds": 5, "priority": 101}, "priority must be between 0 and 100"),
        ({"every_seconds": "5"}, "invalid request body"),
        ({"every_seconds": 5, "schedule_id": "x" * 97}, None),
        ({"every_seconds": 5, "schedule_id": "has space"}, None),
        ({"every_seconds": 5, "workflow": ""}, "workflow must not be empty"),
        # Refused at definition, not at every tick (where it would fail each pass for ever).
        ({"every_seconds": 5, "workflow": "oris.evil"}, None),
    ],
)
async def test_bad_schedule_definitions_are_a_400_and_write_nothing(
    api: httpx.AsyncClient, fields: dict[str, Any], message: str | None
) -> None:
    error = await fails(api, "POST", "/v1/schedules", 400, {**body("bad"), **fields})
    assert error["code"] == "invalid_argument"
    if message is not None:
        assert error["message"] == message
    assert (await ok(api, "GET", "/v1/schedules"))["total"] == 0


async def test_unknown_schedules_are_404_on_every_route(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/schedules/none"),
        ("POST", "/v1/schedules/none/pause"),
        ("POST", "/v1/schedules/none/resume"),
        ("POST", "/v1/schedules/none/trigger"),
        ("DELETE", "/v1/schedules/none"),
    ]:
        assert (await fails(api, method, path, 404))["code"] == "not_found"


async def test_each_tick_queues_one_job_named_after_its_tick(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await ok(api, "POST", "/v1/schedules", body("every", every_seconds=1, overlap="allow"))

    async def three() -> list[dict[str, Any]] | None:
        jobs = await schedule_jobs(api, "every")
        return jobs if len(jobs) >= 3 else None

    jobs = await eventually(three, "three ticks", rt)
    ticks = [tick_of(job["thread_id"]) for job in jobs]
    assert all(job["thread_id"].startswith("every:") for job in jobs)
    assert all(job["schedule_id"] == "every" for job in jobs)
    assert len(set(ticks)) == len(ticks)
    assert all(t.microsecond == 0 for t in ticks)
    state = await ok(api, "GET", f"/v1/jobs/{jobs[0]['thread_id']}")
    assert state["schedule_id"] == "every"
    assert state["workflow"] == "echo"
    shown = await ok(api, "GET", "/v1/schedules/every")
    assert shown["last_thread_id"] == (await schedule_jobs(api, "every"))[-1]["thread_id"]
    # Ticking again at once changes nothing: the tick is already handled.
    before = len(await schedule_jobs(api, "every"))
    report = await schedules.tick(rt)
    assert report.counts["queued"] <= 1
    assert len(await schedule_jobs(api, "every")) == before + report.counts["queued"]
    metrics = (await api.get("/metrics")).text
    assert 'oris_runtime_schedule_ticks_total{outcome="queued"}' in metrics
    assert "oris_runtime_schedule_lag_ms_count" in metrics
    queued = [
        line
        for line in metrics.splitlines()
        if line.startswith('oris_runtime_schedule_ticks_total{outcome="queued"}')
    ]
    assert float(queued[0].split()[1]) == len(await schedule_jobs(api, "every"))


async def test_pause_stops_ticks_and_resume_restarts_them(api: httpx.AsyncClient) -> None:
    rt = runtime_of(api)
    await ok(api, "POST", "/v1/schedules", body("pausable", every_seconds=1, overlap="allow"))

    async def some() -> bool:
        return len(await schedule_jobs(api, "pausable")) >= 1

    await eventually(some, "a first tick", rt)
    paused = await ok(api, "POST", "/v1/schedules/pausable/pause")
    assert paused["status"] == "paused"
    count = len(await schedule_jobs(api, "pausable"))
    skipped = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while skipped < 2:  # two ticks pass while paused
        assert time.monotonic() < deadline
        skipped += (await schedules.tick(rt)).counts["skipped_paused"]
        await asyncio.sleep(0.05)
    assert len(await schedule_jobs(api, "pausable")) == count
    resumed = await ok(api, "POST", "/v1/schedules/pausable/resume")
    assert resumed["status"] == "active"
    assert datetime.fromisoformat(resumed["next_run_at"]) > datetime.now(UTC).replace(microsecond=0)

    async def more() -> bool:
        return len(await schedule_jobs(api, "pausable")) > count

    await eventually(more, "ticks after resume", rt)
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"limit": 50}))["logs"]
    actions = [row["action"] for row in logs if row["resource_id"] == "pausable"]
    assert {"schedule.create", "schedule.pause", "schedule.resume"} <= set(actions)


async def test_overlap_skip_queues_nothing_while_the_previous_run_is_unfinished(
    api: httpx.AsyncClient,
) -> None:
    rt = runtime_of(api)
    await ok(api, "POST", "/v1/schedules", body("single", every_seconds=1, workflow="slow"))

    async def first() -> list[dict[str, Any]] | None:
        jobs = await schedule_jobs(api, "single")
        return jobs or None

    jobs = await eventually(first, "a first tick", rt)
    skipped = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while skipped < 2:  # no worker takes it: later ticks find it unfinished
        assert time.monotonic() < deadline
        report = await schedules.tick(rt)
        assert report.counts["queued"] == 0
        skipped += report.counts["skipped_overlap"]
        await asyncio.sleep(0.05)
    assert len(await schedule_jobs(api, "single")) == 1
    dispatched = await poll(api, "w", workflows=["slow"])
    await ack(api, "w", dispatched["attempt_id"])
    assert await status_of(api, jobs[0]["thread_id"]) == "completed"

    async def next_one() -> bool:
        return len(await schedule_jobs(api, "single")) == 2

    await eventually(next_one, "the next tick once the run finished", rt)


@pytest.mark.parametrize("catch_up", ["latest", "none"])
async def test_ticks_missed_while_nothing_ran_follow_catch_up(
    make_settings: Any, catch_up: str
) -> None:
    from oris.api.app import create_app
    from tests.support import lifespan_client

    settings = make_settings(schedule_misfire_grace_seconds=0.5)
    app = create_app(settings, run_maintenance=False)
    async for api in lifespan_client(app):
        rt = runtime_of(api)
        await ok(
            api,
            "POST",
            "/v1/schedules",
            body("nightly", every_seconds=1, overlap="allow", catch_up=catch_up),
        )
        # Nothing ticks for three whole ticks past the grace: the "runtime was down".
        first_tick = datetime.fromisoformat(
            (await ok(api, "GET", "/v1/schedules/nightly"))["next_run_at"]
        )
        target = int(first_tick.timestamp() * 1000) + 3000 + 600
        while now_ms() < target:
            await asyncio.sleep(0.05)
        report = await schedules.tick(rt)
        jobs = await schedule_jobs(api, "nightly")
        caught_up = []
        for job in jobs:
            detail = await ok(api, "GET", f"/v1/jobs/{job['thread_id']}/detail")
            tick_events = [e for e in detail["timeline"] if e["event_type"] == "schedule_tick"]
            assert len(tick_events) == 1
            if tick_events[0]["details"]["catch_up"]:
                caught_up.append(job["thread_id"])
        assert report.counts["missed"] >= 3
        if catch_up == "latest":
            assert len(caught_up) == 1
            latest_missed = max(
                tick_of(j["thread_id"]) for j in jobs if j["thread_id"] in caught_up
            )
            on_time = [tick_of(j["thread_id"]) for j in jobs if j["thread_id"] not in caught_up]
            assert all(t > latest_missed for t in on_time)
        else:
            assert caught_up == []
        total = report.counts["missed"] + report.counts["queued"]
        assert len(jobs) == report.counts["queued"]
        assert total >= 4


async def test_trigger_runs_once_now_and_delete_keeps_the_jobs(api: httpx.AsyncClient) -> None:
    await ok(api, "POST", "/v1/schedules", body("manual", cron="0 0 1 1 *"))
    await ok(api, "POST", "/v1/schedules/manual/pause")
    triggered = await ok(api, "POST", "/v1/schedules/manual/trigger")
    thread_id = triggered["job"]["thread_id"]
    assert thread_id.startswith("manual:trigger-")
    assert triggered["job"]["status"] == "queued"
    assert (await ok(api, "GET", "/v1/schedules/manual"))["last_thread_id"] == thread_id
    assert [j["thread_id"] for j in await schedule_jobs(api, "manual")] == [thread_id]
    deleted = await ok(api, "DELETE", "/v1/schedules/manual")
    assert deleted == {"schedule_id": "manual", "deleted": True}
    await fails(api, "GET", "/v1/schedules/manual", 404)
    assert await status_of(api, thread_id) == "queued"
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"limit": 50}))["logs"]
    mine = [(row["action"], row["result"]) for row in logs if row["resource_id"] == "manual"]
    assert ("schedule.trigger", "success") in mine
    assert ("schedule.delete", "success") in mine
    assert ("schedule.create", "success") in mine


async def test_a_refused_schedule_change_is_audited(api: httpx.AsyncClient) -> None:
    await fails(api, "POST", "/v1/schedules", 400, body("nope", cron="bad"))
    await fails(api, "POST", "/v1/schedules/ghost/pause", 404)
    logs = (await ok(api, "GET", "/v1/audit/logs", params={"limit": 50}))["logs"]
    refused = {(row["action"], row["status_code"]) for row in logs if row["result"] != "success"}
    assert ("schedule.create", 400) in refused
    assert ("schedule.pause", 404) in refused
