"""Upstream's response envelopes, and the one place that maps errors to HTTP status codes."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.responses import Response

from oris.domain.errors import ErrorCode

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INCIDENT_FREEZE: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.:]{1,128}$")
_META = {"status": "ok", "api_version": "v1"}


def request_id_from(header: str | None) -> str:
    """Reuse a valid incoming ``x-request-id``; otherwise mint a UUIDv4."""
    if header is not None:
        candidate = header.strip()
        if _REQUEST_ID.match(candidate):
            return candidate
    return str(uuid.uuid4())


class JsonResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return orjson.dumps(content)


def ok(request_id: str, data: Any) -> JsonResponse:
    """``{meta, request_id, data}`` with status 200."""
    return JsonResponse(
        {"meta": _META, "request_id": request_id, "data": data},
        headers={"x-request-id": request_id},
    )


def error(
    request_id: str,
    code: ErrorCode,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """``{request_id, error: {code, message, details}}`` with the code's status."""
    return JsonResponse(
        {
            "request_id": request_id,
            "error": {"code": code.value, "message": message, "details": details},
        },
        status_code=STATUS_BY_CODE[code],
        headers={"x-request-id": request_id, **(headers or {})},
    )
