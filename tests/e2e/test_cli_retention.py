"""Retention with real ``oris serve`` processes: two replicas purge one database without errors;
``oris jobs purge --archive`` and ``oris audit archive`` keep what they delete in files that
reload and verify."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.config import ServerSettings
from tests.e2e.test_cli_operator import api, oris, oris_json
from tests.support import running_server, wait_until

pytestmark = pytest.mark.e2e


def _purged(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith('oris_runtime_purged_jobs_total{status="completed"}'):
            return float(line.split()[1])
    raise AssertionError("oris_runtime_purged_jobs_total is not exported")


def _complete(url: str, thread_id: str) -> None:
    api(url, "POST", "/v1/jobs/run", {"thread_id": thread_id})
    lease = api(url, "POST", "/v1/workers/poll", {"worker_id": "ret-worker"})
    assert lease["thread_id"] == thread_id, lease
    api(
        url,
        "POST",
        "/v1/workers/ret-worker/ack",
        {"attempt_id": lease["attempt_id"], "terminal_status": "completed"},
    )


def test_two_replicas_purge_expired_jobs_once_and_keep_live_work(
    make_settings: Any, tmp_path: Path
) -> None:
    settings: ServerSettings = make_settings(
        maintenance_interval_seconds=0.05, metrics_count_interval_seconds=0.05
    )
    env = {"ORIS_RETENTION_COMPLETED_SECONDS": "1", "ORIS_RETENTION_BATCH_SIZE": "2"}
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_server(settings, tmp_path, **env))
        second = stack.enter_context(running_server(settings, tmp_path, **env))
        total = 10
        for index in range(total):
            _complete(first if index % 2 else second, f"done-{index}")
        api(first, "POST", "/v1/jobs/run", {"thread_id": "still-queued"})
        wait_until(
            lambda: _purged(first) + _purged(second) >= total,
            timeout=60,
            message="the replicas to purge every completed job",
        )
        assert _purged(first) + _purged(second) == total
        listing = api(second, "GET", "/v1/jobs?limit=100")
        assert [job["thread_id"] for job in listing["jobs"]] == ["still-queued"]
        assert api(first, "GET", "/v1/audit/verify")["ok"] is True
        # Both sweep: each batch is claimed by one of them, and neither logs a failed pass.
        stack.close()
    logs = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
    assert "maintenance pass failed" not in logs
    assert "Traceback" not in logs


def test_purge_archive_and_audit_archive_round_trip(make_settings: Any, tmp_path: Path) -> None:
    settings: ServerSettings = make_settings()
    # Retention off: only the commands delete anything here.
    env = {"ORIS_RETENTION_COMPLETED_SECONDS": "0"}
    with running_server(settings, tmp_path, **env) as url:
        for index in range(5):
            _complete(url, f"arch-{index}")
        api(url, "POST", "/v1/jobs/run", {"thread_id": "live"})

        preview = oris_json(
            url, "jobs", "purge", "--status", "completed", "--older-than", "0s", "--dry-run"
        )
        assert preview["matched"] == 5 and preview["dry_run"] is True
        assert api(url, "GET", "/v1/jobs?limit=100")["total"] == 6, "a dry run deletes nothing"

        archive = tmp_path / "jobs.jsonl"
        result = oris(
            url,
            "jobs",
            "purge",
            "--status",
            "completed",
            "--older-than",
            "0s",
            "--archive",
            str(archive),
            "--batch-size",
            "2",
        )
        assert result.exit_code == 0, result.output
        assert "purged 5 completed jobs" in result.stdout
        lines = [json.loads(line) for line in archive.read_text().splitlines()]
        assert sorted(line["thread_id"] for line in lines) == [f"arch-{i}" for i in range(5)]
        for line in lines:
            assert line["tables"]["runtime_jobs"][0]["status"] == "completed"
            assert line["tables"]["runtime_attempts"], line
            assert line["tables"]["runtime_leases"], line
        listing = api(url, "GET", "/v1/jobs?limit=100")
        assert [job["thread_id"] for job in listing["jobs"]] == ["live"]

        audit_file = tmp_path / "audit.jsonl"
        archived = oris_json(url, "audit", "archive", "--before", "0s", "--out", str(audit_file))
        assert archived["archived"] > 5
        assert oris(url, "audit", "verify").exit_code == 0
        check = oris(url, "audit", "verify", "--file", str(audit_file))
        assert check.exit_code == 0, check.output
        assert f"audit archive intact: {archived['archived']} rows" in check.stdout
        rows = [json.loads(line) for line in audit_file.read_text().splitlines()]
        assert rows[0]["prev_hash"] is None
        assert rows[-1]["row_hash"] == archived["anchor"]["last_row_hash"]
        rows[1]["details"] = {"forged": True}
        forged = tmp_path / "forged.jsonl"
        forged.write_text("".join(json.dumps(row) + "\n" for row in rows))
        broken = oris(url, "audit", "verify", "--file", str(forged))
        assert broken.exit_code == 1
        assert f"BROKEN at audit_id {rows[1]['audit_id']}" in broken.stdout
