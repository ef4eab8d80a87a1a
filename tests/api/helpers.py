"""Small helpers for API tests."""

from __future__ import annotations

from typing import Any

import httpx


async def ok(
    api: httpx.AsyncClient, method: str, path: str, body: Any = None, **kwargs: Any
) -> Any:
    """Call and assert a success envelope; return ``data``."""
    response = await api.request(method, path, json=body, **kwargs)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["meta"] == {"status": "ok", "api_version": "v1"}
    assert payload["request_id"] == response.headers["x-request-id"]
    return payload["data"]


async def fails(
    api: httpx.AsyncClient, method: str, path: str, status: int, body: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Call and assert an error envelope with ``status``; return ``error``."""
    response = await api.request(method, path, json=body, **kwargs)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"request_id", "error"}, payload
    assert payload["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"code", "message", "details"}
    return error


async def run(api: httpx.AsyncClient, thread_id: str, **fields: Any) -> dict[str, Any]:
    """Queue a job."""
    data: dict[str, Any] = await ok(api, "POST", "/v1/jobs/run", {"thread_id": thread_id, **fields})
    return data


async def poll(api: httpx.AsyncClient, worker_id: str = "w1", **fields: Any) -> dict[str, Any]:
    """Poll once."""
    data: dict[str, Any] = await ok(
        api, "POST", "/v1/workers/poll", {"worker_id": worker_id, **fields}
    )
    return data


async def ack(
    api: httpx.AsyncClient,
    worker_id: str,
    attempt_id: str,
    status: str = "completed",
    **fields: Any,
) -> dict[str, Any]:
    """Ack an attempt."""
    body = {"attempt_id": attempt_id, "terminal_status": status, **fields}
    data: dict[str, Any] = await ok(api, "POST", f"/v1/workers/{worker_id}/ack", body)
    return data


async def status_of(api: httpx.AsyncClient, thread_id: str) -> str:
    """The job's status as inspect reports it."""
    data = await ok(api, "GET", f"/v1/jobs/{thread_id}")
    return str(data["status"])
