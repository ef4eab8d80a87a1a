"""``oris triage`` against a live server: the evidence bundle and a flagged condition."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.config import ServerSettings
from tests.support import free_port, oris_command, running_server, server_env

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
        "metrics-history.json",
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


def _signal(summary: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in summary["signals"] if s["name"] == name]
    assert len(found) == 1, summary["signals"]
    signal: dict[str, Any] = found[0]
    return signal


def test_triage_after_the_event_judges_backpressure_over_the_alert_window(
    settings: ServerSettings, tmp_path: Path
) -> None:
    # A worker holds its one lease and keeps polling: 30 polls refused for its cap while a
    # second job waits. Triage starts only after the polls stopped, and samples for 0 s.
    with running_server(settings, tmp_path) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            for thread_id in ("bp-1", "bp-2"):
                assert client.post("/v1/jobs/run", json={"thread_id": thread_id}).status_code == 200
            poll = {"worker_id": "busy", "max_active_leases": 1}
            first = client.post("/v1/workers/poll", json=poll).json()["data"]
            assert first["decision"] == "dispatched"
            for _ in range(30):
                answer = client.post("/v1/workers/poll", json=poll).json()["data"]
                assert (answer["decision"], answer["reason"]) == ("backpressure", "worker_limit")
        result = subprocess.run(
            [
                *oris_command(),
                "triage",
                "--output-dir",
                str(tmp_path / "evidence"),
                "--sample-seconds",
                "0",
            ],
            env=server_env(settings, ORIS_SERVER_URL=url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    # The counter's value and its increase over the rule's 10-minute window, side by side.
    line = next(
        row for row in result.stdout.splitlines() if row.startswith("oris_runtime_backpressure")
    )
    assert re.match(r"oris_runtime_backpressure_total\s+30\s+\+30 in 10m\b.*BEYOND$", line), line
    assert "backpressure in 10m: worker_limit 30, tenant_limit 0" in result.stdout
    assert "playbook: Sustained backpressure" in result.stdout
    assert "Queue depth rising" not in result.stdout
    folder = Path(result.stdout.split("evidence: ", 1)[1].split(" ", 1)[0])
    summary = json.loads((folder / "summary.json").read_text())
    backpressure = _signal(summary, "oris_runtime_backpressure_total")
    assert (backpressure["value"], backpressure["increase"]) == (30, 30)
    assert backpressure["window_seconds"] == 600 and backpressure["basis"] == "history"
    dispatches = _signal(summary, "oris_runtime_dispatches_total")
    assert dispatches["increase"] == 1 and dispatches["breached"] is False
    assert summary["playbook"] == "Sustained backpressure"


def test_triage_against_a_closed_port_still_writes_the_bundle(
    settings: ServerSettings, tmp_path: Path
) -> None:
    # A port that was just free: nothing listens there.
    url = f"http://127.0.0.1:{free_port()}"
    env = server_env(
        settings,
        ORIS_SERVER_URL=url,
        ORIS_API_TOKEN="tok-supersecret-1",
        ORIS_RUNTIME_DSN="postgresql://triage:pw-supersecret-2@127.0.0.1:1/nowhere",
    )
    result = subprocess.run(
        [*oris_command(), "triage", "--output-dir", str(tmp_path / "evidence")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "unreachable" in result.stderr
    assert "playbook: API unavailable" in result.stdout
    folder = Path(result.stdout.split("evidence: ", 1)[1].split(" ", 1)[0])
    names = {p.name for p in folder.iterdir()}
    assert {"connection.json", "settings.json", "database.json", "summary.json"} <= names
    assert "MANIFEST.sha256" in names
    for line in (folder / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    for path in folder.iterdir():
        assert "supersecret" not in path.read_text(), path.name
    assert "supersecret" not in result.stdout + result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["playbook"] == "API unavailable" and summary["reachable"] is False
    connection = json.loads((folder / "connection.json").read_text())
    assert connection["server_url"] == url and "ConnectError" in connection["error"]
    environment = json.loads((folder / "settings.json").read_text())["environment"]
    assert environment["ORIS_API_TOKEN"] == "***"
    assert environment["ORIS_RUNTIME_DSN"] == "postgresql://triage:***@127.0.0.1:1/nowhere"
    assert environment["ORIS_SERVER_URL"] == url
    database = json.loads((folder / "database.json").read_text())
    assert database["checked"] is True and database["backend"] == "postgres"
    if settings.effective_postgres_dsn:
        # ORIS_POSTGRES_DSN (the real database) wins over ORIS_RUNTIME_DSN.
        assert database["reachable"] is True
        assert database["code_schema_version"] >= 1
    else:
        assert database["reachable"] is False
        assert "unreachable" in database["error"]


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
