"""Every route x every kind of caller answers with the documented status (both backends)."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oris.api.app import create_app
from oris.config import ServerSettings
from oris.services import keys
from oris.services.context import RequestContext
from oris.services.runtime import Runtime
from tests.support import lifespan_client

ADMIN_TOKEN = "admin-token-for-tests"

ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/jobs/run", {"thread_id": "m"}),
    ("POST", "/v1/jobs", {"thread_id": "m"}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/m", None),
    ("GET", "/v1/jobs/m/detail", None),
    ("GET", "/v1/jobs/m/history", None),
    ("GET", "/v1/jobs/m/timeline", None),
    ("GET", "/v1/jobs/m/timeline/export", None),
    ("GET", "/v1/jobs/m/checkpoints/cp-x", None),
    ("POST", "/v1/jobs/m/resume", {"value": 1}),
    ("POST", "/v1/jobs/m/replay", {}),
    ("POST", "/v1/jobs/m/cancel", {}),
    ("GET", "/v1/interrupts", None),
    ("GET", "/v1/interrupts/int-x", None),
    ("POST", "/v1/interrupts/int-x/resume", {"value": 1}),
    ("POST", "/v1/interrupts/int-x/reject", {}),
    ("POST", "/v1/workers/poll", {"worker_id": "wk-1"}),
    ("POST", "/v1/workers/wk-1/heartbeat", {"lease_id": "lease-x"}),
    ("POST", "/v1/workers/wk-1/extend-lease", {"lease_id": "lease-x"}),
    (
        "POST",
        "/v1/workers/wk-1/report-step",
        {"attempt_id": "a", "action_id": "b", "status": "c", "dedupe_token": "d"},
    ),
    ("POST", "/v1/workers/wk-1/ack", {"attempt_id": "a", "terminal_status": "completed"}),
    (
        "POST",
        "/v1/workers/wk-1/acks",
        {"acks": [{"attempt_id": "a", "terminal_status": "completed"}]},
    ),
    ("GET", "/v1/attempts/a/retries", None),
    ("GET", "/v1/dlq", None),
    ("GET", "/v1/dlq/a", None),
    ("POST", "/v1/dlq/a/replay", None),
    ("GET", "/v1/audit/logs", None),
    ("GET", "/v1/audit/verify", None),
    ("GET", "/v1/keys", None),
    ("GET", "/v1/workers", None),
    ("GET", "/v1/metrics/history", None),
    ("POST", "/v1/keys", {"role": "viewer"}),
    ("POST", "/v1/keys/none/disable", None),
    ("POST", "/v1/keys/none/rotate", None),
    ("POST", "/v1/schedules", {"schedule_id": "s", "workflow": "echo", "every_seconds": 60}),
    ("GET", "/v1/schedules", None),
    ("GET", "/v1/schedules/s", None),
    ("POST", "/v1/schedules/s/pause", None),
    ("POST", "/v1/schedules/s/resume", None),
    ("POST", "/v1/schedules/s/trigger", None),
    ("DELETE", "/v1/schedules/s", None),
]


def expected(caller: str, method: str, path: str) -> str:
    """'allowed' (anything but 401/403), '401' or '403' — the documented role matrix."""
    if caller in {"anonymous", "wrong-secret", "disabled-key"}:
        return "401"
    if caller == "admin":
        return "allowed"
    workers = path.startswith("/v1/workers")
    if workers and method == "GET":
        return "403" if caller in {"worker", "worker-other-id"} else "allowed"
    if caller in {"worker", "worker-other-id"}:
        if not workers or method == "GET":
            return "403"
        return "allowed" if caller == "worker" else "403"
    if workers or path.startswith("/v1/keys"):
        return "403"
    read_only = path.startswith(("/v1/audit", "/v1/attempts"))
    if caller == "viewer":
        return "allowed" if method == "GET" else "403"
    if caller == "operator":
        return "403" if read_only and method != "GET" else "allowed"
    raise AssertionError(caller)


@pytest.fixture
async def secured(
    settings: ServerSettings, make_settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    # The failed-check limit is tested on its own; here every caller must get its own answer.
    secured_settings: ServerSettings = make_settings(
        api_auth_bearer_token=ADMIN_TOKEN, auth_max_failures_per_window=0
    )
    app = create_app(secured_settings, run_maintenance=False)
    async for client in lifespan_client(app):
        rt: Runtime = app.state.runtime
        ctx = RequestContext.internal()
        made = {}
        for role in ("viewer", "operator", "worker"):
            prefix = "wk-" if role == "worker" else None
            made[role] = await keys.create_key(
                rt.db, ctx, role=role, key_id=f"key-{role}", worker_id_prefix=prefix
            )
        disabled = await keys.create_key(rt.db, ctx, role="admin", key_id="key-disabled")
        await keys.disable_key(rt.db, ctx, "key-disabled")
        headers = {
            "anonymous": {},
            "wrong-secret": {"authorization": "Bearer nope"},
            "disabled-key": {"x-api-key-id": "key-disabled", "x-api-key": disabled["secret"]},
            "admin": {"authorization": f"Bearer {ADMIN_TOKEN}"},
            **{
                role: {"x-api-key-id": made[role]["key_id"], "x-api-key": made[role]["secret"]}
                for role in ("viewer", "operator", "worker")
            },
            "worker-other-id": {
                "x-api-key-id": "key-worker",
                "x-api-key": made["worker"]["secret"],
            },
        }
        yield client, headers


def _other_worker(method: str, path: str, body: Any) -> tuple[str, Any]:
    path = path.replace("/wk-1/", "/other-1/")
    if isinstance(body, dict) and body.get("worker_id") == "wk-1":
        body = {**body, "worker_id": "other-1"}
    return path, body


async def test_route_role_matrix(
    secured: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = secured
    mismatches = []
    for caller, caller_headers in headers.items():
        for method, path, body in ROUTES:
            actual_path, actual_body = (path, body)
            if caller == "worker-other-id":
                actual_path, actual_body = _other_worker(method, path, body)
            response = await client.request(
                method, actual_path, json=actual_body, headers=caller_headers
            )
            want = expected(caller, method, path)
            got = str(response.status_code) if response.status_code in (401, 403) else "allowed"
            if got != want:
                mismatches.append((caller, method, path, response.status_code, response.text[:120]))
            if response.status_code in (401, 403):
                error = response.json()["error"]
                assert error["code"] == (
                    "unauthorized" if response.status_code == 401 else "forbidden"
                )
                assert "key-" not in error["message"]
    assert mismatches == []
    for open_path in ("/healthz", "/metrics"):
        assert (await client.get(open_path)).status_code == 200


async def test_denied_requests_are_audited(
    secured: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = secured
    await client.post("/v1/jobs/run", json={"thread_id": "x"}, headers=headers["anonymous"])
    await client.post("/v1/jobs/run", json={"thread_id": "x"}, headers=headers["viewer"])
    await client.get("/v1/keys", headers={**headers["operator"], "x-request-id": "denied-1"})
    logs = (await client.get("/v1/audit/logs", headers=headers["admin"])).json()["data"]["logs"]
    denied = [row for row in logs if row["result"] == "denied"]
    assert [(r["action"], r["status_code"], r["actor_role"]) for r in reversed(denied)] == [
        ("job.run", 401, None),
        ("job.run", 403, "viewer"),
        ("auth.denied", 403, "operator"),
    ]
    assert denied[0]["request_id"] == "denied-1"
    assert denied[0]["resource_id"] == "/v1/keys"


async def test_non_admin_reads_of_payloads_are_audited(
    secured: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = secured
    await client.post(
        "/v1/jobs/run",
        json={"thread_id": "secret-job", "input": {"card": "4111"}},
        headers=headers["operator"],
    )
    assert (await client.get("/v1/jobs/secret-job", headers=headers["viewer"])).status_code == 200
    assert (await client.get("/v1/jobs/secret-job", headers=headers["admin"])).status_code == 200
    logs = (
        await client.get("/v1/audit/logs", params={"action": "job.read"}, headers=headers["admin"])
    ).json()["data"]["logs"]
    assert [(r["actor_id"], r["resource_id"]) for r in logs] == [("key-viewer", "secret-job")]


def test_every_secret_comparison_is_constant_time() -> None:
    """Fails if a plain ``==``/``!=`` ever compares something that looks like a secret."""
    suspicious = ("secret", "token", "api_key", "password", "digest", "hash")
    sources = [Path("oris/api/auth.py"), Path("oris/services/keys.py")]
    offenders = []
    for source in sources:
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                text = ast.unparse(node).lower()
                if (
                    any(word in text for word in suspicious)
                    and "none" not in text
                    and "scheme" not in text
                ):
                    offenders.append(f"{source}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
    assert "compare_digest" in sources[0].read_text()
    assert "compare_digest" in sources[1].read_text()


async def test_rate_limit_answers_429_with_retry_after(make_settings: Any) -> None:
    limited: ServerSettings = make_settings(rate_limit_per_second=1.0, rate_limit_burst=2)
    app = create_app(limited, run_maintenance=False)
    async for client in lifespan_client(app):
        statuses = [(await client.get("/v1/jobs")).status_code for _ in range(4)]
        assert statuses[:2] == [200, 200]
        response = await client.get("/v1/jobs")
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1


async def test_the_first_managed_key_must_be_admin(api: httpx.AsyncClient) -> None:
    refused = await api.post("/v1/keys", json={"role": "operator"})
    assert refused.status_code == 400
    assert "first credential must be an admin key" in refused.json()["error"]["message"]
    created = await api.post("/v1/keys", json={"role": "admin", "key_id": "first-admin"})
    assert created.status_code == 200
    secret = created.json()["data"]["secret"]
    assert (await api.get("/v1/jobs")).status_code == 401
    headers = {"x-api-key-id": "first-admin", "x-api-key": secret}
    assert (await api.get("/v1/jobs", headers=headers)).status_code == 200
