"""Authentication that stays on, costs the same for every wrong answer, and audits denials
without flooding the log (both backends)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from oris.api.app import create_app
from oris.config import ServerSettings
from oris.services import keys
from oris.services.bootstrap import open_database, upgrade_schema
from oris.services.context import RequestContext
from tests.api.helpers import ok
from tests.support import lifespan_client

ADMIN_TOKEN = "hardening-admin-token"


def key_headers(created: dict[str, Any]) -> dict[str, str]:
    return {"x-api-key-id": created["key_id"], "x-api-key": created["secret"]}


async def seed_admin_key(settings: ServerSettings, key_id: str) -> dict[str, Any]:
    """Migrate the database and create an admin key before any server starts on it."""
    database = open_database(settings)
    try:
        await upgrade_schema(database)
        return await keys.create_key(
            database, RequestContext.internal(), role="admin", key_id=key_id
        )
    finally:
        await database.dispose()


async def logs_of(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get("/v1/audit/logs", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]["logs"]


def other_address(app: Any, host: str) -> httpx.AsyncClient:
    """A second client of the same running app, calling from another address."""
    transport = httpx.ASGITransport(app=app, client=(host, 6666), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://oris.test")


# --- credentials stay required ------------------------------------------------------------------


async def test_disabling_the_last_key_of_a_non_loopback_server_does_not_open_it(
    make_settings: Any,
) -> None:
    settings: ServerSettings = make_settings(server_addr="0.0.0.0:18080")
    admin = await seed_admin_key(settings, "only-admin")
    app = create_app(settings, run_maintenance=False)
    async for client in lifespan_client(app):
        assert (await client.get("/v1/keys")).status_code == 401
        disabled = await client.post("/v1/keys/only-admin/disable", headers=key_headers(admin))
        assert disabled.status_code == 200, disabled.text
        listing = await client.get("/v1/keys")
        assert listing.status_code == 401
        minted = await client.post("/v1/keys", json={"role": "admin"})
        assert minted.status_code == 401
        assert minted.json()["error"]["code"] == "unauthorized"


async def test_a_loopback_server_stays_closed_once_a_key_was_created_and_disabled(
    settings: ServerSettings, api: httpx.AsyncClient
) -> None:
    assert (await api.get("/v1/jobs")).status_code == 200  # no credential ever: open locally
    first = await api.post("/v1/keys", json={"role": "admin", "key_id": "first-admin"})
    assert first.status_code == 200
    assert (await api.get("/v1/jobs")).status_code == 401
    admin = first.json()["data"]
    assert (
        await api.post("/v1/keys/first-admin/disable", headers=key_headers(admin))
    ).status_code == 200
    assert (await api.get("/v1/keys")).status_code == 401
    assert (await api.post("/v1/keys", json={"role": "admin"})).status_code == 401
    # A restart on the same database does not reopen it either.
    app = create_app(settings, run_maintenance=False)
    async for client in lifespan_client(app):
        assert (await client.get("/v1/keys")).status_code == 401
        assert (await client.post("/v1/keys", json={"role": "admin"})).status_code == 401


async def test_the_key_that_turns_auth_on_says_so(api: httpx.AsyncClient) -> None:
    first = await api.post("/v1/keys", json={"role": "admin", "key_id": "warned"})
    data = first.json()["data"]
    assert data["warnings"] and "authentication is now required" in data["warnings"][0]
    second = await api.post("/v1/keys", json={"role": "viewer"}, headers=key_headers(data))
    assert second.status_code == 200
    assert "warnings" not in second.json()["data"]


# --- the scheme, the API description, and worker ids ------------------------------------------


@pytest.fixture
async def secured(make_settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings: ServerSettings = make_settings(api_auth_bearer_token=ADMIN_TOKEN)
    app = create_app(settings, run_maintenance=False)
    async for client in lifespan_client(app):
        yield app, client


async def test_the_bearer_scheme_is_case_insensitive(
    secured: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = secured
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        response = await client.get(
            "/v1/jobs", headers={"authorization": f"{scheme} {ADMIN_TOKEN}"}
        )
        assert response.status_code == 200, scheme
    wrong = await client.get("/v1/jobs", headers={"authorization": f"Basic {ADMIN_TOKEN}"})
    assert wrong.status_code == 401


async def test_the_api_description_needs_a_credential_when_auth_is_on(
    secured: tuple[Any, httpx.AsyncClient], api: httpx.AsyncClient
) -> None:
    app, client = secured
    anonymous = await client.get("/openapi.json")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    rows = await logs_of(client, admin, action="auth.denied")
    assert [row["resource_id"] for row in rows] == ["/openapi.json"]
    worker = await keys.create_key(
        app.state.runtime.db, RequestContext.internal(), role="worker", key_id="doc-worker"
    )
    described = await client.get("/openapi.json", headers=key_headers(worker))
    assert described.status_code == 200
    assert "/v1/jobs/run" in described.json()["paths"]
    assert (await client.get("/docs")).status_code == 404
    assert (await api.get("/openapi.json")).status_code == 200  # auth off: open like the rest


async def test_a_worker_key_acting_as_another_prefix_is_refused_before_its_body_is_read(
    secured: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = secured
    worker = await keys.create_key(
        app.state.runtime.db,
        RequestContext.internal(),
        role="worker",
        key_id="prefixed",
        worker_id_prefix="wk-",
    )
    headers = key_headers(worker)
    malformed = [
        ("/v1/workers/other-1/heartbeat", {"lease_id": 5}),
        ("/v1/workers/other-1/ack", {"terminal_status": 1}),
        ("/v1/workers/other-1/report-step", {}),
        ("/v1/workers/poll", {"worker_id": "other-1", "limit": "many"}),
    ]
    for path, body in malformed:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    own = await client.post("/v1/workers/wk-1/heartbeat", json={"lease_id": 5}, headers=headers)
    assert own.status_code == 400
    rows = await logs_of(
        client, {"authorization": f"Bearer {ADMIN_TOKEN}"}, result="denied", actor_id="prefixed"
    )
    assert sorted(row["details"]["path"] for row in rows) == sorted(p for p, _ in malformed)


# --- failed checks: constant cost and a budget ------------------------------------------------


async def test_every_failed_key_check_pays_one_hash(
    secured: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = secured
    db = app.state.runtime.db
    active = await keys.create_key(db, RequestContext.internal(), role="viewer", key_id="k-on")
    off = await keys.create_key(db, RequestContext.internal(), role="viewer", key_id="k-off")
    await keys.disable_key(db, RequestContext.internal(), "k-off")
    real = keys.verify_secret
    calls: list[str] = []

    def counting(secret: str, stored: str) -> bool:
        calls.append(secret)
        return real(secret, stored)

    monkeypatch.setattr(keys, "verify_secret", counting)
    attempts = [
        {"x-api-key-id": "k-unknown", "x-api-key": "guess-1"},
        {"x-api-key-id": "k-off", "x-api-key": off["secret"]},
        {"x-api-key-id": "k-on", "x-api-key": "guess-3"},
    ]
    for headers in attempts:
        calls.clear()
        response = await client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "missing or invalid credentials"
        assert calls == [headers["x-api-key"]], headers["x-api-key-id"]
    calls.clear()
    assert (await client.get("/v1/jobs", headers=key_headers(active))).status_code == 200
    assert len(calls) == 1


async def test_failed_checks_are_limited_per_address_and_per_key_id(
    make_settings: Any,
) -> None:
    settings: ServerSettings = make_settings(
        api_auth_bearer_token=ADMIN_TOKEN,
        auth_max_failures_per_window=3,
        auth_failure_window_seconds=600,
    )
    app = create_app(settings, run_maintenance=False)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async for client in lifespan_client(app):
        db = app.state.runtime.db
        viewer = await keys.create_key(db, RequestContext.internal(), role="viewer", key_id="k-v")
        async with other_address(app, "10.0.0.7") as elsewhere:
            # A key verified moments ago is never throttled, so guessers cannot lock it out.
            assert (await elsewhere.get("/v1/jobs", headers=key_headers(viewer))).status_code == 200
            wrong = {"x-api-key-id": "k-v", "x-api-key": "not-it"}
            statuses = [(await client.get("/v1/jobs", headers=wrong)).status_code for _ in range(3)]
            assert statuses == [401, 401, 401]
            throttled = await client.get("/v1/jobs", headers=wrong)
            assert throttled.status_code == 429
            body = throttled.json()
            assert body["error"]["code"] == "rate_limited"
            assert int(throttled.headers["retry-after"]) >= 1
            # The address is out of budget for any credential, even the right token…
            assert (await client.get("/v1/jobs", headers=admin)).status_code == 429
            # …and the key id is out of budget from every address.
            assert (await elsewhere.get("/v1/jobs", headers=wrong)).status_code == 429
            other_id = {"x-api-key-id": "k-other", "x-api-key": "not-it"}
            assert (await elsewhere.get("/v1/jobs", headers=other_id)).status_code == 401
            assert (await elsewhere.get("/v1/jobs", headers=key_headers(viewer))).status_code == 200
            assert (await elsewhere.get("/v1/audit/logs", headers=admin)).status_code == 200
            rows = await logs_of(elsewhere, admin, result="denied")
        limited = [row for row in rows if row["status_code"] == 429]
        assert {row["source_addr"] for row in limited} == {"127.0.0.1", "10.0.0.7"}
        assert all(row["action"] == "auth.denied" for row in limited)
        assert all(
            "too many failed credential checks" in row["details"]["message"] for row in limited
        )


# --- key rotation ------------------------------------------------------------------------------


async def test_rotating_a_disabled_key_needs_reactivate(
    secured: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = secured
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    db = app.state.runtime.db
    await keys.create_key(db, RequestContext.internal(), role="operator", key_id="k-rot")
    await keys.disable_key(db, RequestContext.internal(), "k-rot")
    refused = await client.post("/v1/keys/k-rot/rotate", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert "reactivate" in refused.json()["error"]["message"]
    listed = (await client.get("/v1/keys", headers=admin)).json()["data"]["keys"]
    assert [key["status"] for key in listed if key["key_id"] == "k-rot"] == ["disabled"]
    bad = await client.post("/v1/keys/k-rot/rotate", json={"reactivate": "yes"}, headers=admin)
    assert bad.status_code == 400
    rotated = await client.post("/v1/keys/k-rot/rotate", json={"reactivate": True}, headers=admin)
    assert rotated.status_code == 200, rotated.text
    data = rotated.json()["data"]
    assert data["status"] == "active"
    assert (await client.get("/v1/jobs", headers=key_headers(data))).status_code == 200
    rows = await logs_of(client, admin, action="key.rotate")
    assert [(row["result"], row["status_code"]) for row in reversed(rows)] == [
        ("error", 409),
        ("error", 400),
        ("success", 200),
    ]
    assert rows[0]["details"] == {"reactivated": True}
    again = await client.post("/v1/keys/k-rot/rotate", headers=admin)
    assert again.status_code == 200  # an active key rotates without the flag


# --- denials: audited always, once per window --------------------------------------------------


async def test_a_denial_with_nul_in_a_path_parameter_is_audited_and_the_chain_verifies(
    secured: tuple[Any, httpx.AsyncClient], api: httpx.AsyncClient
) -> None:
    _, client = secured
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    denied = await client.post("/v1/jobs/a%00b/cancel", json={})
    assert denied.status_code == 401
    refused = await client.post("/v1/jobs/c%00d/cancel", json={}, headers=admin)
    assert refused.status_code == 400
    rows = await logs_of(client, admin, action="job.cancel")
    assert [(row["result"], row["resource_id"]) for row in reversed(rows)] == [
        ("denied", "a\\u0000b"),
        ("error", "c\\u0000d"),
    ]
    assert rows[1]["details"]["path"] == "/v1/jobs/a\x00b/cancel"
    report = (await client.get("/v1/audit/verify", headers=admin)).json()["data"]
    assert report["ok"] is True and report["rows_checked"] == 2
    # Open server: the refused action is audited as well.
    assert (await api.post("/v1/jobs/e%00f/cancel", json={})).status_code == 400
    open_rows = await logs_of(api, {}, action="job.cancel")
    assert [row["resource_id"] for row in open_rows] == ["e\\u0000f"]


async def test_identical_denials_are_one_row_and_a_count(
    secured: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = secured
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    ids = [f"denied-{index}" for index in range(5)]
    for rid in ids:
        assert (await client.get("/v1/jobs", headers={"x-request-id": rid})).status_code == 401
    assert (await client.get("/v1/dlq", headers={"x-request-id": "other"})).status_code == 401
    rows = await logs_of(client, admin, action="auth.denied")
    assert [(row["request_id"], row["resource_id"]) for row in reversed(rows)] == [
        ("denied-0", "/v1/jobs"),
        ("other", "/v1/dlq"),
    ]
    await app.state.denials.flush(everything=True)
    rows = await logs_of(client, admin, action="auth.denied")
    summary = rows[0]
    assert summary["request_id"] == "denied-4"
    assert summary["details"]["count"] == 4
    assert summary["details"]["first_request_id"] == "denied-0"
    assert summary["status_code"] == 401 and summary["result"] == "denied"
    assert len(rows) == 3
    report = (await client.get("/v1/audit/verify", headers=admin)).json()["data"]
    assert report["ok"] is True


async def test_a_closed_window_is_summarised_without_waiting_for_another_denial(
    make_settings: Any,
) -> None:
    settings: ServerSettings = make_settings(
        api_auth_bearer_token=ADMIN_TOKEN, audit_denial_window_seconds=0.2
    )
    app = create_app(settings, run_maintenance=False)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async for client in lifespan_client(app):
        for _ in range(3):
            assert (await client.get("/v1/jobs")).status_code == 401

        deadline = time.monotonic() + 20
        found: list[Any] = []
        while not found and time.monotonic() < deadline:
            rows = await logs_of(client, admin, action="auth.denied")
            found = [row for row in rows if "count" in (row["details"] or {})]
            if not found:
                await asyncio.sleep(0.05)
        assert [row["details"]["count"] for row in found] == [2]


# --- quiet idle polls ---------------------------------------------------------------------------


async def test_an_idle_poll_logs_at_debug_and_other_requests_at_info(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="oris.access")
    idle = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w-idle", "wait_ms": 0})
    assert idle["decision"] == "noop"
    await ok(api, "POST", "/v1/jobs/run", {"thread_id": "quiet-1"})
    busy = await ok(api, "POST", "/v1/workers/poll", {"worker_id": "w-idle", "wait_ms": 0})
    assert busy["decision"] == "dispatched"
    lines = [
        (record.levelno, getattr(record, "route", None))
        for record in caplog.records
        if record.name == "oris.access"
    ]
    assert lines == [
        (logging.DEBUG, "/v1/workers/poll"),
        (logging.INFO, "/v1/jobs/run"),
        (logging.INFO, "/v1/workers/poll"),
    ]
