"""``oris schedules …`` and the delayed-start options of ``oris jobs`` against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oris.config import ServerSettings
from tests.e2e.test_cli_operator import oris, oris_json
from tests.support import running_server, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(make_settings: object, tmp_path: Path) -> Iterator[str]:
    """A real ``oris serve`` that ticks schedules every 0.1 s."""
    settings: ServerSettings = make_settings(maintenance_interval_seconds=0.1)  # type: ignore[operator]
    with running_server(settings, tmp_path) as url:
        yield url


def test_schedules_commands_create_list_inspect_pause_resume_trigger_delete(server: str) -> None:
    created = oris(
        server,
        "schedules",
        "create",
        "cli-beat",
        "--workflow",
        "cli.work",
        "--every-seconds",
        "1",
        "--input",
        '{"n": 1}',
        "--overlap",
        "allow",
    )
    assert created.exit_code == 0, created.output
    assert re.search(r"^status\s+active$", created.stdout, re.MULTILINE)
    again = oris_json(
        server,
        "schedules",
        "create",
        "cli-beat",
        "--workflow",
        "cli.work",
        "--every-seconds",
        "1",
        "--input",
        '{"n": 1}',
        "--overlap",
        "allow",
    )
    assert again["created"] is False
    conflict = oris(
        server, "schedules", "create", "cli-beat", "--workflow", "other", "--every-seconds", "1"
    )
    assert conflict.exit_code == 1
    assert "conflict" in conflict.stderr
    usage = oris(server, "schedules", "create", "x", "--workflow", "w")
    assert usage.exit_code == 2
    bad = oris(server, "schedules", "create", "x", "--workflow", "w", "--cron", "99 * * * *")
    assert bad.exit_code == 1 and "invalid_argument" in bad.stderr

    listing = oris(server, "schedules", "list")
    assert listing.exit_code == 0, listing.output
    assert re.search(r"^cli-beat\s+active\s+cli\.work\s+every 1s\s+UTC\s", listing.stdout, re.M)

    def ticked() -> bool:
        jobs = oris_json(server, "jobs", "list", "--schedule-id", "cli-beat")["jobs"]
        return len(jobs) >= 1

    wait_until(ticked, timeout=30, message="a tick")
    paused = oris_json(server, "schedules", "pause", "cli-beat")
    assert paused["status"] == "paused"
    shown = oris_json(server, "schedules", "inspect", "cli-beat")
    assert shown["status"] == "paused"
    assert shown["last_thread_id"].startswith("cli-beat:")
    triggered = oris_json(server, "schedules", "trigger", "cli-beat")
    assert triggered["job"]["thread_id"].startswith("cli-beat:trigger-")
    resumed = oris(server, "schedules", "resume", "cli-beat")
    assert resumed.exit_code == 0 and re.search(r"^status\s+active$", resumed.stdout, re.M)
    deleted = oris_json(server, "schedules", "delete", "cli-beat")
    assert deleted == {"schedule_id": "cli-beat", "deleted": True}
    missing = oris(server, "schedules", "inspect", "cli-beat")
    assert missing.exit_code == 1 and "not_found" in missing.stderr


def test_jobs_run_with_a_delay_is_scheduled_and_listed_as_such(server: str) -> None:
    later = oris_json(server, "jobs", "run", "cli-later", "--delay-ms", "600000")
    assert later["status"] == "scheduled"
    run_at = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    at = oris_json(server, "jobs", "run", "cli-at", "--run-at", run_at)
    assert at["status"] == "scheduled"
    assert datetime.fromisoformat(at["run_at"]) - datetime.fromisoformat(run_at) < timedelta(
        milliseconds=1
    )
    listed = oris_json(server, "jobs", "list", "--status", "scheduled")
    assert {job["thread_id"] for job in listed["jobs"]} == {"cli-later", "cli-at"}
    both = oris(server, "jobs", "run", "cli-bad", "--delay-ms", "5", "--run-at", run_at)
    assert both.exit_code == 1 and "give run_at or delay_ms, not both" in both.stderr
