"""Schedules served by real ``oris serve`` processes: one job per tick with two replicas, and
catch-up after a restart."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.config import ServerSettings
from tests.support import running_server, wait_until

pytestmark = pytest.mark.e2e

TICKS_WANTED = 12


def _counter(url: str, outcome: str) -> float:
    prefix = f'oris_runtime_schedule_ticks_total{{outcome="{outcome}"}} '
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[1])
    raise AssertionError(f"no {outcome} tick counter at {url}")


def _jobs(url: str, schedule_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/jobs", params={"schedule_id": schedule_id, "limit": 200})
    response.raise_for_status()
    jobs: list[dict[str, Any]] = response.json()["data"]["jobs"]
    return jobs


def _tick_of(thread_id: str) -> int:
    stamp = thread_id.rsplit(":", 1)[1]
    moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return int(moment.timestamp())


def _tick_events(url: str, thread_id: str) -> list[dict[str, Any]]:
    detail = httpx.get(f"{url}/v1/jobs/{thread_id}/detail").json()["data"]
    return [e for e in detail["timeline"] if e["event_type"] == "schedule_tick"]


def _create(url: str, **fields: Any) -> None:
    body = {"schedule_id": "beat", "workflow": "echo", "every_seconds": 1, **fields}
    httpx.post(f"{url}/v1/schedules", json=body).raise_for_status()


def test_two_replicas_queue_exactly_one_job_per_tick(make_settings: Any, tmp_path: Path) -> None:
    settings: ServerSettings = make_settings(maintenance_interval_seconds=0.1)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_server(settings, tmp_path))
        second = stack.enter_context(running_server(settings, tmp_path))
        _create(first, overlap="allow")
        wait_until(
            lambda: len(_jobs(second, "beat")) >= TICKS_WANTED,
            timeout=90,
            interval=0.2,
            message=f"{TICKS_WANTED} ticks",
        )
        httpx.post(f"{first}/v1/schedules/beat/pause").raise_for_status()
        time.sleep(0.3)  # a tick being handled when the pause landed commits first
        jobs = _jobs(first, "beat")
        ticks = sorted(_tick_of(job["thread_id"]) for job in jobs)
        # Every second from the first tick to the last, each exactly once.
        assert ticks == list(range(ticks[0], ticks[-1] + 1)), ticks
        queued = [_counter(url, "queued") for url in (first, second)]
        assert sum(queued) == len(jobs), f"queued counters {queued} vs {len(jobs)} jobs"
        assert _counter(first, "missed") + _counter(second, "missed") == 0
        for job in jobs:
            assert job["schedule_id"] == "beat"
            assert len(_tick_events(first, job["thread_id"])) == 1


@pytest.mark.parametrize("catch_up", ["latest", "none"])
def test_ticks_missed_while_the_server_was_down_follow_catch_up(
    make_settings: Any, tmp_path: Path, catch_up: str
) -> None:
    settings: ServerSettings = make_settings(maintenance_interval_seconds=0.1)
    grace = {"ORIS_SCHEDULE_MISFIRE_GRACE_SECONDS": "1"}
    with running_server(settings, tmp_path, **grace) as url:
        _create(url, overlap="allow", catch_up=catch_up)
        wait_until(lambda: _jobs(url, "beat"), timeout=30, message="a first tick")
    stopped_at = time.time()
    # Down across several ticks, well past the grace.
    wait_until(lambda: time.time() > stopped_at + 4, timeout=10, message="downtime to pass")
    restarted_at = time.time()
    with running_server(settings, tmp_path, **grace) as url:

        def handled() -> bool:
            late = [j for j in _jobs(url, "beat") if _tick_of(j["thread_id"]) > restarted_at]
            return _counter(url, "missed") > 0 and len(late) >= 2

        wait_until(handled, timeout=30, message="the restarted server to handle the backlog")
        httpx.post(f"{url}/v1/schedules/beat/pause").raise_for_status()
        time.sleep(0.3)  # a tick being handled when the pause landed commits first
        # Ticks up to the stop were the first server's; every later one is the second's.
        after = [j for j in _jobs(url, "beat") if _tick_of(j["thread_id"]) > stopped_at]
        caught_up = [
            _tick_of(job["thread_id"])
            for job in after
            if _tick_events(url, job["thread_id"])[0]["details"]["catch_up"]
        ]
        assert _counter(url, "missed") >= 3
        on_time = [
            _tick_of(job["thread_id"])
            for job in after
            if not _tick_events(url, job["thread_id"])[0]["details"]["catch_up"]
        ]
        # On-time ticks are those within the grace of a pass of the restarted server.
        assert all(tick >= restarted_at - 1.5 for tick in on_time), (on_time, restarted_at)
        if catch_up == "latest":
            assert len(caught_up) == 1, caught_up
            assert stopped_at < caught_up[0] < restarted_at + 30
            assert all(tick > caught_up[0] for tick in on_time)
        else:
            assert caught_up == []
