"""The operator CLI (``oris jobs|interrupts|dlq|audit logs|keys``) against a real ``oris serve``.

Commands run in-process through Typer's runner (the server is a real subprocess); exit codes
and stderr of the console script itself are checked with real subprocesses where it matters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from oris.cli.main import app
from oris.config import ServerSettings
from tests.support import free_port, oris_command, running_server

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "cli-test-admin-token"
REQUEST_ID = re.compile(r"request_id [0-9a-f-]{36}")
_RUNNER = CliRunner()
_CLIENT_ENV = ("ORIS_API_TOKEN", "ORIS_API_KEY", "ORIS_API_KEY_ID", "ORIS_REQUEST_TIMEOUT_SECONDS")


def oris(url: str, *args: str, token: str | None = None) -> Result:
    """Run one ``oris`` command in-process against ``url`` (no credentials unless ``token``)."""
    env: dict[str, str | None] = dict.fromkeys(_CLIENT_ENV)
    env.update({"ORIS_SERVER_URL": url, "ORIS_API_TOKEN": token, "NO_COLOR": None})
    return _RUNNER.invoke(app, list(args), env=env, catch_exceptions=False)


def oris_json(url: str, *args: str, token: str | None = None) -> Any:
    """Run a command with ``--json``, assert success and return the parsed output."""
    result = oris(url, *args, "--json", token=token)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def oris_process(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``oris`` console script as a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIS_")}
    env["ORIS_SERVER_URL"] = url
    return subprocess.run(
        [*oris_command(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def api(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """Call the API directly (as a worker would) and return the envelope's ``data``."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def lease(url: str, workflow: str, worker_id: str = "cli-test-worker") -> dict[str, Any]:
    """Poll once for ``workflow`` and return the dispatch."""
    body = {"worker_id": worker_id, "workflows": [workflow], "limit": 1}
    data: dict[str, Any] = api(url, "POST", "/v1/workers/poll", body)
    assert data["decision"] == "dispatched", data
    return data


def ack(
    url: str, dispatch: dict[str, Any], status: str, worker_id: str = "cli-test-worker", **body: Any
) -> dict[str, Any]:
    """Ack a dispatch with ``status``."""
    payload = {
        "attempt_id": dispatch["attempt_id"],
        "lease_id": dispatch["lease_id"],
        "terminal_status": status,
        **body,
    }
    data: dict[str, Any] = api(url, "POST", f"/v1/workers/{worker_id}/ack", payload)
    return data


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


def test_jobs_commands_run_list_inspect_detail_timeline_replay_and_cancel(server: str) -> None:
    run = oris(
        server,
        "jobs",
        "run",
        "cli-job-1",
        "--input",
        '{"order": 42}',
        "--workflow",
        "cli.work",
        "--priority",
        "7",
        "--tenant",
        "acme",
        "--retry-policy",
        '{"strategy": "fixed", "backoff_ms": 1000, "max_retries": 2}',
        "--timeout-ms",
        "60000",
        "--on-timeout",
        "cancelled",
    )
    assert run.exit_code == 0, run.output
    assert re.search(r"^status\s+queued$", run.stdout, re.MULTILINE)
    created = oris_json(server, "jobs", "run", "cli-job-2", "--idempotency-key", "cli-key-2")
    assert created["thread_id"] == "cli-job-2"
    assert created["status"] == "queued"
    assert created["idempotency_key"] == "cli-key-2"

    listing = oris(server, "jobs", "list")
    assert listing.exit_code == 0, listing.output
    assert listing.stdout.splitlines()[0].split() == [
        "THREAD_ID",
        "STATUS",
        "WORKFLOW",
        "RUN",
        "TENANT",
        "PRIORITY",
        "UPDATED_AT",
    ]
    assert re.search(r"^cli-job-1\s+queued\s+cli\.work\s+1\s+acme\s+7\s", listing.stdout, re.M)
    page = oris_json(server, "jobs", "list", "--status", "queued", "--limit", "1", "--offset", "1")
    assert page["total"] == 2
    assert page["limit"] == 1
    assert page["offset"] == 1
    assert len(page["jobs"]) == 1

    state = oris_json(server, "jobs", "inspect", "cli-job-1")
    assert state["input"] == {"order": 42}
    assert (state["workflow"], state["tenant_id"], state["priority"]) == ("cli.work", "acme", 7)
    inspect = oris(server, "jobs", "inspect", "cli-job-1")
    assert re.search(r'^input\s+\{"order":42\}$', inspect.stdout, re.MULTILINE)

    dispatch = lease(server, "cli.work")
    assert dispatch["thread_id"] == "cli-job-1"
    ack(server, dispatch, "completed", output={"done": True})

    detail = oris_json(server, "jobs", "detail", "cli-job-1")
    assert detail["status"] == "completed"
    assert detail["output"] == {"done": True}
    assert [a["status"] for a in detail["attempts"]] == ["completed"]
    assert detail["attempts"][0]["leases"][0]["worker_id"] == "cli-test-worker"
    detail_text = oris(server, "jobs", "detail", "cli-job-1").stdout
    assert "Attempts:" in detail_text
    assert "Timeline:" in detail_text
    assert dispatch["attempt_id"] in detail_text

    timeline = oris_json(server, "jobs", "timeline", "cli-job-1")
    events = [event["event_type"] for event in timeline["timeline"]]
    assert events[0] == "job_queued"
    assert "attempt_completed" in events
    timeline_text = oris(server, "jobs", "timeline", "cli-job-1").stdout
    assert "job_queued" in timeline_text

    replay = oris_json(server, "jobs", "replay", "cli-job-1")
    assert replay["status"] == "queued"
    assert replay["idempotent_replay"] is False
    again = oris_json(
        server, "jobs", "replay", "cli-job-1", "--checkpoint-id", replay["checkpoint_id"]
    )
    assert again["idempotent_replay"] is True
    assert again["attempt_id"] == replay["attempt_id"]

    cancel = oris(server, "jobs", "cancel", "cli-job-2", "--reason", "operator test")
    assert cancel.exit_code == 0, cancel.output
    assert re.search(r"^status\s+cancelled$", cancel.stdout, re.MULTILINE)
    cancelled = oris_json(server, "jobs", "inspect", "cli-job-2")
    assert cancelled["status"] == "cancelled"
    detail_2 = oris_json(server, "jobs", "detail", "cli-job-2")
    assert detail_2["cancel_reason"] == "operator test"


def test_interrupt_commands_list_show_resume_and_reject(server: str) -> None:
    interrupt_ids = {}
    for thread_id in ("cli-approve", "cli-deny", "cli-job-resume"):
        oris_json(server, "jobs", "run", thread_id, "--workflow", "cli.approval")
        dispatch = lease(server, "cli.approval")
        answer = ack(
            server, dispatch, "interrupted", interrupt={"value": {"ask": thread_id}, "step": "gate"}
        )
        interrupt_ids[dispatch["thread_id"]] = answer["interrupt_id"]

    listing = oris(server, "interrupts", "list", "--status", "pending")
    assert listing.exit_code == 0, listing.output
    for interrupt_id in interrupt_ids.values():
        assert interrupt_id in listing.stdout
    one = oris_json(server, "interrupts", "list", "--run-id", "cli-deny", "--limit", "5")
    assert [i["interrupt_id"] for i in one["interrupts"]] == [interrupt_ids["cli-deny"]]

    shown = oris_json(server, "interrupts", "show", interrupt_ids["cli-approve"])
    assert shown["status"] == "pending"
    assert shown["value"] == {"ask": "cli-approve"}
    assert shown["step"] == "gate"
    shown_text = oris(server, "interrupts", "show", interrupt_ids["cli-approve"]).stdout
    assert re.search(r"^status\s+pending$", shown_text, re.MULTILINE)

    resumed = oris_json(
        server, "interrupts", "resume", interrupt_ids["cli-approve"], "--value", '"approved"'
    )
    assert resumed["status"] == "queued"
    redispatch = lease(server, "cli.approval")
    assert redispatch["thread_id"] == "cli-approve"
    assert redispatch["resume_value"] == "approved"

    rejected = oris(server, "interrupts", "reject", interrupt_ids["cli-deny"], "--reason", "no")
    assert rejected.exit_code == 0, rejected.output
    assert oris_json(server, "jobs", "inspect", "cli-deny")["status"] == "cancelled"
    assert (
        oris_json(server, "interrupts", "show", interrupt_ids["cli-deny"])["status"] == "rejected"
    )

    by_job = oris_json(server, "jobs", "resume", "cli-job-resume", "--value", "null")
    assert by_job["status"] == "queued"
    assert by_job["interrupt_id"] == interrupt_ids["cli-job-resume"]

    twice = oris(server, "interrupts", "reject", interrupt_ids["cli-deny"])
    assert twice.exit_code == 1
    assert "interrupt already rejected (status 409, code conflict" in twice.stderr
    assert REQUEST_ID.search(twice.stderr)


def test_dlq_commands_list_show_and_bulk_replay_past_failures(server: str) -> None:
    attempt_ids = []
    for thread_id in ("cli-dead-1", "cli-dead-2"):
        oris_json(server, "jobs", "run", thread_id, "--workflow", "cli.fragile")
        dispatch = lease(server, "cli.fragile")
        ack(server, dispatch, "failed", error={"message": "boom", "type": "RuntimeError"})
        attempt_ids.append(dispatch["attempt_id"])

    listing = oris(server, "dlq", "list")
    assert listing.exit_code == 0, listing.output
    assert all(attempt_id in listing.stdout for attempt_id in attempt_ids)
    pending = oris_json(server, "dlq", "list", "--status", "pending", "--limit", "10")
    assert {entry["attempt_id"] for entry in pending["entries"]} == set(attempt_ids)
    shown = oris_json(server, "dlq", "show", attempt_ids[0])
    assert shown["replay_status"] == "pending"
    assert shown["error"]["message"] == "boom"

    replay = oris(
        server, "dlq", "replay", attempt_ids[0], "attempt-unknown", attempt_ids[1], "--json"
    )
    assert replay.exit_code == 1
    summary = json.loads(replay.stdout)
    assert (summary["requeued"], summary["failed"]) == (2, 1)
    assert [r["ok"] for r in summary["results"]] == [True, False, True]
    assert summary["results"][1]["error"]["status"] == 404
    assert summary["results"][0]["data"]["status"] == "requeued"
    refused = [line for line in replay.stderr.splitlines() if "[2/3] attempt-unknown: " in line]
    assert len(refused) == 1, replay.stderr
    assert "dead letter not found" in refused[0]
    assert "(status 404, code not_found, request_id " in refused[0]
    assert REQUEST_ID.search(refused[0])
    for thread_id in ("cli-dead-1", "cli-dead-2"):
        assert oris_json(server, "jobs", "inspect", thread_id)["status"] == "queued"

    repeat = oris(server, "dlq", "replay", attempt_ids[0])
    assert repeat.exit_code == 1
    assert "(status 409, code conflict" in repeat.stderr
    assert re.search(r"^0 requeued, 1 failed$", repeat.stdout, re.MULTILINE)
    assert oris_json(server, "dlq", "list", "--status", "replayed")["entries"]


def test_audit_logs_lists_and_filters_operator_actions(server: str) -> None:
    oris_json(server, "jobs", "run", "cli-audited")
    oris_json(server, "jobs", "cancel", "cli-audited", "--reason", "audit me")

    logs = oris_json(server, "audit", "logs", "--action", "job.cancel")
    assert [row["resource_id"] for row in logs["logs"]] == ["cli-audited"]
    row = logs["logs"][0]
    same = oris_json(server, "audit", "logs", "--request-id", row["request_id"])
    assert [r["audit_id"] for r in same["logs"]] == [row["audit_id"]]
    by_resource = oris_json(
        server, "audit", "logs", "--resource-id", "cli-audited", "--result", row["result"]
    )
    assert {r["action"] for r in by_resource["logs"]} == {"job.run", "job.cancel"}
    window = oris_json(server, "audit", "logs", "--from-ms", "0", "--to-ms", "1", "--limit", "5")
    assert window["logs"] == []
    page = oris_json(server, "audit", "logs", "--limit", "1")
    assert page["next_before_id"] == page["logs"][0]["audit_id"]
    older = oris_json(server, "audit", "logs", "--before-id", str(page["next_before_id"]))
    assert all(r["audit_id"] < page["next_before_id"] for r in older["logs"])

    text = oris(server, "audit", "logs", "--limit", "1")
    assert text.exit_code == 0, text.output
    assert text.stdout.split()[:3] == ["ID", "CREATED_AT", "ACTOR"]
    assert f"more rows: --before-id {page['next_before_id']}" in text.stdout

    bad_window = oris(server, "audit", "logs", "--from-ms", "5", "--to-ms", "1")
    assert bad_window.exit_code == 1
    assert "from_ms must be less than or equal to to_ms (status 400" in bad_window.stderr


def test_keys_create_prints_the_secret_once_and_list_never_shows_it(secured_server: str) -> None:
    url = secured_server
    created = oris(
        url,
        "keys",
        "create",
        "--role",
        "operator",
        "--key-id",
        "cli-ops",
        "--description",
        "ops",
        token=ADMIN_TOKEN,
    )
    assert created.exit_code == 0, created.output
    match = re.search(r"^secret\s+(\S+)$", created.stdout, re.MULTILINE)
    assert match is not None, created.stdout
    secret = match.group(1)
    assert created.stdout.count(secret) == 1
    assert "it will not be shown again" in created.stdout

    as_json = oris(
        url,
        "keys",
        "create",
        "--role",
        "worker",
        "--worker-id-prefix",
        "w-",
        "--json",
        token=ADMIN_TOKEN,
    )
    assert as_json.exit_code == 0, as_json.output
    worker_key = json.loads(as_json.stdout)
    assert worker_key["role"] == "worker"
    assert worker_key["worker_id_prefix"] == "w-"
    assert worker_key["secret"]
    assert "it will not be shown again" in as_json.stderr

    listing = oris(url, "keys", "list", token=ADMIN_TOKEN)
    assert listing.exit_code == 0, listing.output
    assert "cli-ops" in listing.stdout
    listed = oris_json(url, "keys", "list", token=ADMIN_TOKEN)
    assert {key["key_id"] for key in listed["keys"]} == {"cli-ops", worker_key["key_id"]}
    for output in (listing.stdout, json.dumps(listed)):
        assert secret not in output
        assert worker_key["secret"] not in output
    assert all("secret" not in key for key in listed["keys"])

    with_key = oris(url, "jobs", "list", "--api-key-id", "cli-ops", "--api-key", secret)
    assert with_key.exit_code == 0, with_key.output
    forbidden = oris(url, "keys", "list", "--api-key-id", "cli-ops", "--api-key", secret)
    assert forbidden.exit_code == 1
    assert "(status 403, code forbidden" in forbidden.stderr

    rotated = oris_json(url, "keys", "rotate", "cli-ops", token=ADMIN_TOKEN)
    assert rotated["secret"] != secret
    assert (
        oris(
            url, "jobs", "list", "--api-key-id", "cli-ops", "--api-key", rotated["secret"]
        ).exit_code
        == 0
    )
    disabled = oris(url, "keys", "disable", "cli-ops", token=ADMIN_TOKEN)
    assert disabled.exit_code == 0, disabled.output
    assert re.search(r"^status\s+disabled$", disabled.stdout, re.MULTILINE)
    assert "secret" not in disabled.stdout

    anonymous = oris(url, "jobs", "list")
    assert anonymous.exit_code == 1
    assert "missing or invalid credentials (status 401, code unauthorized" in anonymous.stderr


def test_refusals_exit_1_with_the_servers_message_and_request_id(server: str) -> None:
    missing = oris_process(server, "jobs", "inspect", "cli-nobody")
    assert missing.returncode == 1
    line = missing.stderr.strip().splitlines()[0]
    assert line.startswith(
        "oris: No state found for thread: cli-nobody (status 404, code not_found"
    )
    assert REQUEST_ID.search(line)
    assert "Traceback" not in missing.stderr
    assert missing.stdout == ""

    oris_json(server, "jobs", "run", "cli-busy")
    busy = oris(server, "jobs", "run", "cli-busy")
    assert busy.exit_code == 1
    assert "already has an active run (status queued) (status 409, code conflict" in busy.stderr
    assert REQUEST_ID.search(busy.stderr)

    invalid = oris(server, "jobs", "run", "cli-bad", "--priority", "500")
    assert invalid.exit_code == 1
    assert "(status 400, code invalid_argument" in invalid.stderr


def test_unreachable_server_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("jobs", "list"), ("dlq", "replay", "a", "b"), ("keys", "list", "--json")):
        result = oris(url, *args)
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith(f"oris: server unreachable: {url}")
        assert result.stdout == ""
    process = oris_process(url, "jobs", "inspect", "anything")
    assert process.returncode == 3
    assert "server unreachable" in process.stderr
    assert "Traceback" not in process.stderr


def test_keys_create_warns_when_it_turns_auth_on_and_rotate_keeps_disabled_keys_off(
    server: str,
) -> None:
    first = oris(server, "keys", "create", "--role", "admin", "--key-id", "cli-first", "--json")
    assert first.exit_code == 0, first.output
    assert "oris: warning: this is the first credential: authentication is now required" in (
        first.stderr
    )
    admin = json.loads(first.stdout)
    login = ("--api-key-id", "cli-first", "--api-key", admin["secret"])
    second = oris(server, "keys", "create", "--role", "operator", "--key-id", "cli-op", *login)
    assert second.exit_code == 0, second.output
    assert "warning" not in second.stderr
    assert "warnings" not in second.stdout
    assert oris(server, "keys", "disable", "cli-op", *login).exit_code == 0

    refused = oris(server, "keys", "rotate", "cli-op", *login)
    assert refused.exit_code == 1
    assert "is disabled; rotating it would re-enable it" in refused.stderr
    assert "(status 409, code conflict" in refused.stderr
    listed = oris_json(server, "keys", "list", *login)
    assert {key["key_id"]: key["status"] for key in listed["keys"]}["cli-op"] == "disabled"

    reactivated = oris_json(server, "keys", "rotate", "cli-op", "--reactivate", *login)
    assert reactivated["status"] == "active"
    assert (
        oris(
            server, "jobs", "list", "--api-key-id", "cli-op", "--api-key", reactivated["secret"]
        ).exit_code
        == 0
    )


def test_bulk_cancel_and_bulk_replay_with_a_dry_run(server: str) -> None:
    attempt_ids = []
    for thread_id in ("bulk-dead-1", "bulk-dead-2"):
        oris_json(server, "jobs", "run", thread_id, "--workflow", "cli.bulk", "--tenant", "acme")
        dispatch = lease(server, "cli.bulk")
        ack(server, dispatch, "failed", error={"message": "boom"})
        attempt_ids.append(dispatch["attempt_id"])
    oris_json(server, "jobs", "run", "bulk-other", "--workflow", "cli.other")

    preview = oris(server, "dlq", "replay", "--all", "--workflow", "cli.bulk", "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert all(attempt_id in preview.stdout for attempt_id in attempt_ids)
    assert "dry run: 2 dead letters would be replayed; nothing changed" in preview.stdout
    assert oris_json(server, "jobs", "inspect", "bulk-dead-1")["status"] == "failed"

    oris_json(server, "incident", "open", "--reason", "terminal error spike")
    frozen = oris(server, "dlq", "replay", "--all", "--workflow", "cli.bulk")
    assert frozen.exit_code == 1
    assert "code incident_freeze" in frozen.stderr
    replayed = oris_json(
        server,
        "dlq",
        "replay",
        "--all",
        "--workflow",
        "cli.bulk",
        "--override-reason",
        "fix deployed",
    )
    assert replayed["count"] == 2 and replayed["attempt_ids"] == attempt_ids
    oris_json(server, "incident", "close")

    usage = oris(server, "dlq", "replay", "--workflow", "cli.bulk")
    assert usage.exit_code == 2 and "--all" in usage.output
    usage = oris(server, "jobs", "cancel", "--workflow", "cli.bulk")
    assert usage.exit_code == 2 and "--where" in usage.output

    dry = oris_json(
        server, "jobs", "cancel", "--where", "--tenant", "acme", "--dry-run", "--reason", "x"
    )
    assert dry["dry_run"] is True and dry["thread_ids"] == ["bulk-dead-1", "bulk-dead-2"]
    cancelled = oris(server, "jobs", "cancel", "--where", "--workflow", "cli.bulk")
    assert cancelled.exit_code == 0, cancelled.output
    assert "2 jobs cancelled, 0 refused" in cancelled.stdout
    assert oris_json(server, "jobs", "inspect", "bulk-other")["status"] == "queued"
    bulk_rows = oris_json(server, "audit", "logs", "--action", "job.cancel_bulk")["logs"]
    assert bulk_rows[0]["details"]["thread_ids"] == ["bulk-dead-1", "bulk-dead-2"]

    page = oris(server, "jobs", "list", "--limit", "1", "--order", "created")
    assert page.exit_code == 0, page.output
    cursor = re.search(r"next page: --cursor (\S+)", page.stdout)
    assert cursor, page.stdout
    following = oris_json(server, "jobs", "list", "--limit", "5", "--cursor", cursor.group(1))
    assert len(following["jobs"]) == 2 and following["next_cursor"] is None
    filtered = oris_json(server, "jobs", "list", "--workflow", "cli.other")
    assert [job["thread_id"] for job in filtered["jobs"]] == ["bulk-other"]
    dlq = oris_json(server, "dlq", "list", "--tenant", "acme", "--limit", "1")
    assert dlq["next_cursor"]
