"""``oris smoke`` against a real ``oris serve``: passes on a fresh server, never touches real
work, and reports refusals and an absent server with the right exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from oris.config import ServerSettings
from tests.e2e.test_cli_operator import ADMIN_TOKEN, api, oris, oris_json, oris_process
from tests.support import free_port, running_server

pytestmark = pytest.mark.e2e

STEPS = ["run", "inspect", "poll", "ack", "verify"]


@pytest.fixture
def server(settings: ServerSettings, tmp_path: Path) -> Iterator[str]:
    """A real ``oris serve`` on a fresh database (no credentials: open to local callers)."""
    with running_server(settings, tmp_path) as url:
        yield url


@pytest.fixture
def secured_server(settings: ServerSettings, tmp_path: Path) -> Iterator[str]:
    """A real ``oris serve`` that requires the admin bearer token."""
    with running_server(settings, tmp_path, ORIS_API_AUTH_BEARER_TOKEN=ADMIN_TOKEN) as url:
        yield url


def test_smoke_passes_against_a_fresh_server(server: str) -> None:
    result = oris_process(server, "smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:5]] == [[step, "ok"] for step in STEPS]
    assert lines[5].startswith("smoke: ok")
    thread_id = re.search(r"thread (smoke-\d{8}T\d{6}Z-[0-9a-f]{8})", lines[5])
    assert thread_id is not None
    state = oris_json(server, "jobs", "inspect", thread_id.group(1))
    assert (state["status"], state["workflow"]) == ("completed", "oris.smoke")


def test_smoke_completes_leftover_smoke_jobs_and_never_touches_real_work(server: str) -> None:
    oris_json(server, "jobs", "run", "real-work", "--workflow", "echo", "--input", '"keep me"')
    oris_json(server, "jobs", "run", "smoke-leftover", "--workflow", "oris.smoke")

    report = oris_json(server, "smoke")
    assert report["ok"] is True
    assert [step["name"] for step in report["steps"]] == STEPS
    assert all(step["ok"] for step in report["steps"])
    assert report["leftovers_acked"] == ["smoke-leftover"]
    assert re.fullmatch(r"smoke-worker-[0-9a-f]{8}", report["worker_id"])
    assert oris_json(server, "jobs", "inspect", report["thread_id"])["status"] == "completed"
    assert oris_json(server, "jobs", "inspect", "smoke-leftover")["status"] == "completed"

    detail = api(server, "GET", "/v1/jobs/real-work/detail")
    assert detail["status"] == "queued"
    assert [(a["status"], a["leases"], a["lease_holder"]) for a in detail["attempts"]] == [
        ("queued", [], None)
    ]
    assert [event["event_type"] for event in detail["timeline"]] == ["job_queued"]


def test_smoke_fails_with_exit_1_at_the_refused_step(secured_server: str) -> None:
    result = oris(secured_server, "smoke")
    assert result.exit_code == 1, result.output
    first = result.stdout.splitlines()[0]
    assert first.split()[:2] == ["run", "FAIL"]
    assert "(status 401, code unauthorized, request_id " in first
    assert result.stdout.splitlines()[-1].startswith("smoke: FAIL")

    as_json = oris(secured_server, "smoke", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["failed_step"] == "run"
    assert len(report["steps"]) == 1


def test_smoke_can_poll_and_ack_with_a_separate_worker_key(secured_server: str) -> None:
    url = secured_server
    operator = api(url, "POST", "/v1/keys", {"role": "operator"}, token=ADMIN_TOKEN)
    worker = api(
        url,
        "POST",
        "/v1/keys",
        {"role": "worker", "worker_id_prefix": "smoke-worker-"},
        token=ADMIN_TOKEN,
    )
    only_operator = oris(
        url, "smoke", "--api-key-id", operator["key_id"], "--api-key", operator["secret"]
    )
    assert only_operator.exit_code == 1
    assert [line.split()[:2] for line in only_operator.stdout.splitlines()[:3]] == [
        ["run", "ok"],
        ["inspect", "ok"],
        ["poll", "FAIL"],
    ]
    assert "(status 403, code forbidden" in only_operator.stdout

    split = oris(
        url,
        "smoke",
        "--api-key-id",
        operator["key_id"],
        "--api-key",
        operator["secret"],
        "--worker-api-key-id",
        worker["key_id"],
        "--worker-api-key",
        worker["secret"],
    )
    assert split.exit_code == 0, split.output
    assert "smoke: ok" in split.stdout


def test_smoke_exits_3_when_the_server_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = oris_process(url, "smoke")
    assert result.returncode == 3
    assert result.stdout.splitlines()[0].split()[:2] == ["run", "FAIL"]
    assert "server unreachable" in result.stdout
    assert "Traceback" not in result.stderr
    as_json = oris(url, "smoke", "--json")
    assert as_json.exit_code == 3
    assert json.loads(as_json.stdout)["failed_step"] == "run"
