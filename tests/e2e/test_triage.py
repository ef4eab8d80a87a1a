"""``oris triage`` against a live server: the evidence bundle and a flagged condition."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from oris.config import ServerSettings
from tests.support import oris_command, running_server, server_env

pytestmark = pytest.mark.e2e


def _flood_backpressure(url: str, stop: threading.Event) -> None:
    """Keep one worker at its cap and keep polling, as a saturated fleet would (bounded)."""
    with httpx.Client(base_url=url, timeout=5) as client:
        client.post("/v1/jobs/run", json={"thread_id": "bp-1"})
        client.post("/v1/jobs/run", json={"thread_id": "bp-2"})
        client.post("/v1/workers/poll", json={"worker_id": "busy", "max_active_leases": 1})
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            client.post("/v1/workers/poll", json={"worker_id": "busy", "max_active_leases": 1})
            time.sleep(0.02)


def test_triage_writes_a_verified_bundle_and_flags_backpressure(
    make_settings: object, tmp_path: Path
) -> None:
    # Queue counts refreshed often enough that the two scrapes see the flood's queued jobs.
    settings: ServerSettings = make_settings(metrics_count_interval_seconds=0.1)  # type: ignore[operator]
    with running_server(settings, tmp_path) as url:
        stop = threading.Event()
        flood = threading.Thread(target=_flood_backpressure, args=(url, stop))
        flood.start()
        try:
            time.sleep(0.3)
            result = subprocess.run(
                [
                    *oris_command(),
                    "triage",
                    "--output-dir",
                    str(tmp_path / "evidence"),
                    "--sample-seconds",
                    "1",
                    "--json",
                ],
                env=server_env(settings, ORIS_SERVER_URL=url),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            stop.set()
            flood.join()
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    signals = {s["name"]: s for s in summary["signals"]}
    assert signals["oris_runtime_backpressure_total"]["breached"] is True
    assert summary["backpressure_by_reason"]["worker_limit"] > 0
    assert summary["playbook"] == "Sustained backpressure"
    assert "busy" in summary["workers_seen"]
    tables = summary["table_health"]
    assert tables["database_size_bytes"] > 0
    assert set(tables["oldest_finished_job_age_seconds"]) == {"completed", "cancelled", "failed"}
    if settings.backend.value == "postgres":
        assert tables["table_size_bytes"]["runtime_jobs"] > 0
        assert "runtime_attempts" in tables["table_dead_tuples"]
    folder = Path(summary["evidence"])
    expected = {
        "healthz.json",
        "metrics-1.prom",
        "metrics-2.prom",
        "jobs.json",
        "audit.json",
        "dlq.json",
        "workers.json",
        "incidents.json",
        "summary.json",
        "MANIFEST.sha256",
    }
    assert {p.name for p in folder.iterdir()} == expected
    for line in (folder / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    jobs = json.loads((folder / "jobs.json").read_text())
    assert {j["thread_id"] for j in jobs["jobs"]} == {"bp-1", "bp-2"}


def test_triage_against_nothing_exits_3(settings: ServerSettings, tmp_path: Path) -> None:
    result = subprocess.run(
        [*oris_command(), "triage", "--output-dir", str(tmp_path), "--sample-seconds", "0"],
        env=server_env(settings, ORIS_SERVER_URL="http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "unreachable" in result.stderr


def test_triage_names_attempts_finished_but_never_acked(
    make_settings: object, tmp_path: Path
) -> None:
    settings: ServerSettings = make_settings(unacked_finished_bound_seconds=0)  # type: ignore[operator]
    with running_server(settings, tmp_path) as url, httpx.Client(base_url=url, timeout=5) as api:
        api.post("/v1/jobs/run", json={"thread_id": "never-acked"})
        leased = api.post("/v1/workers/poll", json={"worker_id": "keeper"}).json()["data"]
        beat = {"lease_id": leased["lease_id"], "settling": True}
        assert api.post("/v1/workers/keeper/heartbeat", json=beat).status_code == 200
        command = [*oris_command(), "triage", "--output-dir", str(tmp_path / "evidence")]
        env = server_env(settings, ORIS_SERVER_URL=url)
        shown = subprocess.run(
            [*command, "--sample-seconds", "0"], env=env, capture_output=True, text=True, timeout=60
        )
        as_json = subprocess.run(
            [*command, "--sample-seconds", "0", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert shown.returncode == 0, shown.stderr
    assert f"finished, not acked > 0 s: 1 {leased['attempt_id']}" in shown.stdout
    summary = json.loads(as_json.stdout)
    assert summary["unacked_finished"] == {
        "count": 1,
        "bound_seconds": 0,
        "attempts": [leased["attempt_id"]],
    }
    workers = json.loads((Path(summary["evidence"]) / "workers.json").read_text())
    assert workers["unacked_finished_attempts"][0]["worker_id"] == "keeper"
