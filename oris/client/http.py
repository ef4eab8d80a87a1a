"""An async client over httpx: one method per endpoint, envelopes unwrapped, errors typed.

This is the low-level layer the worker and the CLI use; applications use
:class:`oris.client.Client` / :class:`oris.client.AsyncClient` on top of it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from oris.client.errors import ApiError, ServerUnreachable, api_error
from oris.client.transport import LeanTransport
from oris.config import ClientSettings

BULK_TIMEOUT_SECONDS = 900.0


def auth_headers(settings: ClientSettings) -> dict[str, str]:
    """Credential headers from ``ORIS_API_TOKEN`` or ``ORIS_API_KEY_ID`` + ``ORIS_API_KEY``."""
    if settings.api_token is not None and settings.api_token.get_secret_value().strip():
        return {"authorization": f"Bearer {settings.api_token.get_secret_value().strip()}"}
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        headers = {"x-api-key": settings.api_key.get_secret_value().strip()}
        if settings.api_key_id:
            headers["x-api-key-id"] = settings.api_key_id.strip()
        return headers
    return {}


class OrisClient:
    """One connection pool to one Oris API; use as an async context manager."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self._http = httpx.AsyncClient(
            base_url=self.settings.server_url.rstrip("/"),
            headers={"user-agent": "oris-client", **auth_headers(self.settings)},
            timeout=self.settings.request_timeout_seconds,
            transport=transport or LeanTransport(),
        )

    async def __aenter__(self) -> OrisClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Any:
        """Call an endpoint and return the envelope's ``data``."""
        clean = None if params is None else {k: v for k, v in params.items() if v is not None}
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=clean,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout_seconds is None else timeout_seconds,
            )
        except httpx.UnsupportedProtocol:
            raise  # a configuration error (no http:// scheme), not an outage
        except httpx.TransportError as error:
            raise ServerUnreachable(
                f"{self.settings.server_url}: {type(error).__name__}: {error}"
            ) from error
        return _unwrap(response)

    async def raw(self, method: str, path: str) -> httpx.Response:
        """An unwrapped response (``/healthz``, ``/metrics``)."""
        try:
            return await self._http.request(method, path)
        except httpx.TransportError as error:
            raise ServerUnreachable(
                f"{self.settings.server_url}: {type(error).__name__}: {error}"
            ) from error

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Call an endpoint whose ``data`` is a JSON object."""
        data = await self.request(method, path, **kwargs)
        if not isinstance(data, dict):
            raise ApiError(
                200, "unexpected_response", f"{path} returned {type(data).__name__}", None
            )
        return data

    # Jobs
    async def run_job(self, thread_id: str, input: Any = None, **fields: Any) -> dict[str, Any]:
        """``POST /v1/jobs/run``."""
        headers = {}
        if "traceparent" in fields:
            headers["traceparent"] = fields.pop("traceparent")
        body = {
            "thread_id": thread_id,
            "input": input,
            **{k: v for k, v in fields.items() if v is not None},
        }
        return await self._object("POST", "/v1/jobs/run", json=body, headers=headers or None)

    async def list_jobs(
        self,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """``GET /v1/jobs``; ``filters``: ``workflow``, ``tenant_id``, ``created_after``,
        ``created_before``, ``schedule_id``, ``order``, ``cursor``."""
        return await self._object(
            "GET",
            "/v1/jobs",
            params={"status": status, "limit": limit, "offset": offset, **filters},
        )

    async def cancel_jobs(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/jobs/cancel``: cancel the live jobs a filter selects (``dry_run``)."""
        return await self._object(
            "POST",
            "/v1/jobs/cancel",
            json={k: v for k, v in body.items() if v is not None},
            timeout_seconds=self._bulk_timeout(body),
        )

    def _bulk_timeout(self, body: dict[str, Any]) -> float | None:
        """A bulk action runs one transaction per item (up to 10,000): give it time."""
        if body.get("dry_run"):
            return None
        return max(self.settings.request_timeout_seconds, BULK_TIMEOUT_SECONDS)

    async def inspect_job(self, thread_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{thread_id}``."""
        return await self._object("GET", f"/v1/jobs/{thread_id}")

    async def job_detail(self, thread_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{thread_id}/detail``."""
        return await self._object("GET", f"/v1/jobs/{thread_id}/detail")

    async def job_timeline(self, thread_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{thread_id}/timeline``."""
        return await self._object("GET", f"/v1/jobs/{thread_id}/timeline")

    async def cancel_job(self, thread_id: str, reason: str | None = None) -> dict[str, Any]:
        """``POST /v1/jobs/{thread_id}/cancel``."""
        return await self._object("POST", f"/v1/jobs/{thread_id}/cancel", json={"reason": reason})

    async def resume_job(self, thread_id: str, value: Any, **extra: Any) -> dict[str, Any]:
        """``POST /v1/jobs/{thread_id}/resume``."""
        return await self._object(
            "POST", f"/v1/jobs/{thread_id}/resume", json={"value": value, **extra}
        )

    async def replay_job(
        self, thread_id: str, checkpoint_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """``POST /v1/jobs/{thread_id}/replay``."""
        body = {"checkpoint_id": checkpoint_id, **extra} if checkpoint_id else dict(extra)
        return await self._object("POST", f"/v1/jobs/{thread_id}/replay", json=body)

    # Schedules
    async def create_schedule(
        self, schedule_id: str, workflow: str, **fields: Any
    ) -> dict[str, Any]:
        """``POST /v1/schedules`` (fields left None are omitted)."""
        body = {
            "schedule_id": schedule_id,
            "workflow": workflow,
            **{k: v for k, v in fields.items() if v is not None},
        }
        return await self._object("POST", "/v1/schedules", json=body)

    async def list_schedules(
        self, limit: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """``GET /v1/schedules``."""
        return await self._object("GET", "/v1/schedules", params={"limit": limit, "offset": offset})

    async def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        """``GET /v1/schedules/{schedule_id}``."""
        return await self._object("GET", f"/v1/schedules/{schedule_id}")

    async def schedule_action(self, schedule_id: str, action: str) -> dict[str, Any]:
        """``POST /v1/schedules/{schedule_id}/{pause|resume|trigger}``."""
        return await self._object("POST", f"/v1/schedules/{schedule_id}/{action}")

    async def delete_schedule(self, schedule_id: str) -> dict[str, Any]:
        """``DELETE /v1/schedules/{schedule_id}``."""
        return await self._object("DELETE", f"/v1/schedules/{schedule_id}")

    # Interrupts
    async def list_interrupts(
        self, status: str | None = None, run_id: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """``GET /v1/interrupts``."""
        return await self._object(
            "GET", "/v1/interrupts", params={"status": status, "run_id": run_id, "limit": limit}
        )

    async def get_interrupt(self, interrupt_id: str) -> dict[str, Any]:
        """``GET /v1/interrupts/{id}``."""
        return await self._object("GET", f"/v1/interrupts/{interrupt_id}")

    async def resume_interrupt(self, interrupt_id: str, value: Any, **extra: Any) -> dict[str, Any]:
        """``POST /v1/interrupts/{id}/resume``."""
        return await self._object(
            "POST", f"/v1/interrupts/{interrupt_id}/resume", json={"value": value, **extra}
        )

    async def reject_interrupt(
        self, interrupt_id: str, reason: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/interrupts/{id}/reject``."""
        return await self._object(
            "POST", f"/v1/interrupts/{interrupt_id}/reject", json={"reason": reason}
        )

    # DLQ, attempts, audit, keys
    async def list_dlq(
        self, status: str | None = None, limit: int | None = None, **filters: Any
    ) -> dict[str, Any]:
        """``GET /v1/dlq``; ``filters``: ``workflow``, ``tenant_id``, ``created_after``,
        ``created_before``, ``cursor``."""
        return await self._object(
            "GET", "/v1/dlq", params={"status": status, "limit": limit, **filters}
        )

    async def replay_dlq_many(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/dlq/replay``: replay the pending dead letters a filter selects."""
        return await self._object(
            "POST",
            "/v1/dlq/replay",
            json={k: v for k, v in body.items() if v is not None},
            timeout_seconds=self._bulk_timeout(body),
        )

    async def get_dlq(self, attempt_id: str) -> dict[str, Any]:
        """``GET /v1/dlq/{attempt_id}``."""
        return await self._object("GET", f"/v1/dlq/{attempt_id}")

    async def replay_dlq(
        self, attempt_id: str, *, override_reason: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/dlq/{attempt_id}/replay`` (with an incident-freeze override if given)."""
        headers = {"x-oris-incident-override": override_reason} if override_reason else None
        return await self._object("POST", f"/v1/dlq/{attempt_id}/replay", headers=headers)

    async def attempt_retries(self, attempt_id: str) -> dict[str, Any]:
        """``GET /v1/attempts/{attempt_id}/retries``."""
        return await self._object("GET", f"/v1/attempts/{attempt_id}/retries")

    async def audit_logs(self, **filters: Any) -> dict[str, Any]:
        """``GET /v1/audit/logs``."""
        return await self._object("GET", "/v1/audit/logs", params=filters)

    async def list_keys(self) -> dict[str, Any]:
        """``GET /v1/keys``."""
        return await self._object("GET", "/v1/keys")

    async def create_key(self, role: str, **fields: Any) -> dict[str, Any]:
        """``POST /v1/keys``."""
        return await self._object("POST", "/v1/keys", json={"role": role, **fields})

    async def disable_key(self, key_id: str) -> dict[str, Any]:
        """``POST /v1/keys/{key_id}/disable``."""
        return await self._object("POST", f"/v1/keys/{key_id}/disable")

    async def rotate_key(self, key_id: str, *, reactivate: bool = False) -> dict[str, Any]:
        """``POST /v1/keys/{key_id}/rotate`` (a disabled key needs ``reactivate``)."""
        body = {"reactivate": True} if reactivate else None
        return await self._object("POST", f"/v1/keys/{key_id}/rotate", json=body)

    # Worker protocol
    async def poll(self, worker_id: str, **fields: Any) -> dict[str, Any]:
        """``POST /v1/workers/poll``."""
        body = {"worker_id": worker_id, **{k: v for k, v in fields.items() if v is not None}}
        # A long poll may legitimately take ``wait_ms``: allow for it on top of the usual timeout.
        timeout = self.settings.request_timeout_seconds + int(body.get("wait_ms") or 0) / 1000
        return await self._object("POST", "/v1/workers/poll", json=body, timeout_seconds=timeout)

    async def heartbeat(
        self,
        worker_id: str,
        lease_id: str,
        lease_ttl_seconds: int | None = None,
        *,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/workers/{worker_id}/heartbeat``."""
        body: dict[str, Any] = {"lease_id": lease_id}
        if lease_ttl_seconds is not None:
            body["lease_ttl_seconds"] = lease_ttl_seconds
        return await self._object(
            "POST", f"/v1/workers/{worker_id}/heartbeat", json=body, headers=_trace(traceparent)
        )

    async def report_step(
        self, worker_id: str, *, traceparent: str | None = None, **body: Any
    ) -> dict[str, Any]:
        """``POST /v1/workers/{worker_id}/report-step``."""
        return await self._object(
            "POST",
            f"/v1/workers/{worker_id}/report-step",
            json=body,
            headers=_trace(traceparent),
        )

    async def ack(
        self, worker_id: str, *, traceparent: str | None = None, **body: Any
    ) -> dict[str, Any]:
        """``POST /v1/workers/{worker_id}/ack``."""
        return await self._object(
            "POST",
            f"/v1/workers/{worker_id}/ack",
            json={k: v for k, v in body.items() if v is not None},
            headers=_trace(traceparent),
        )

    async def ack_many(self, worker_id: str, acks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/workers/{worker_id}/acks``: one result per ack, in order, each either
        ``{"ok": true, "data": ...}`` or ``{"ok": false, "status": ..., "error": ...}``."""
        body = {"acks": [{k: v for k, v in item.items() if v is not None} for item in acks]}
        data = await self._object("POST", f"/v1/workers/{worker_id}/acks", json=body)
        results = data.get("results")
        if not isinstance(results, list) or len(results) != len(acks):
            raise ApiError(200, "unexpected_response", "acks returned no result per ack", None)
        return results


__all__ = ["ApiError", "OrisClient", "ServerUnreachable", "auth_headers"]


def _trace(traceparent: str | None) -> dict[str, str] | None:
    """The W3C header that ties a worker call to its job's trace."""
    return {"traceparent": traceparent} if traceparent else None


def _unwrap(response: httpx.Response) -> Any:
    request_id = response.headers.get("x-request-id")
    try:
        # orjson, as the server writes and parses its bodies: the stdlib decoder was a twentieth
        # of the worker's time. Requests stay on httpx's encoder, which refuses NaN.
        payload = orjson.loads(response.content)
    except ValueError:
        payload = None
    if response.status_code == 200 and isinstance(payload, dict) and "data" in payload:
        return payload["data"]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        raise api_error(
            response.status_code,
            str(err.get("code")),
            str(err.get("message")),
            payload.get("request_id", request_id),
            err.get("details"),
        )
    raise ApiError(response.status_code, "unexpected_response", response.text[:200], request_id)
