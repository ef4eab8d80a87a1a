"""Errors that carry an API error code; the API maps each to one HTTP status in one place."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Wire error codes (upstream's, plus the ones this implementation adds)."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    INCIDENT_FREEZE = "incident_freeze"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class OrisError(Exception):
    """Base error: a code, a message safe to show to the caller, and optional details."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(OrisError):
    """The request is malformed or violates a validation rule (400)."""

    code = ErrorCode.INVALID_ARGUMENT


class NotFound(OrisError):
    """The named resource does not exist (404)."""

    code = ErrorCode.NOT_FOUND


class Conflict(OrisError):
    """The resource is in a state that does not allow the operation (409)."""

    code = ErrorCode.CONFLICT


class IncidentFreeze(Conflict):
    """A risky operator action was refused because an incident is open (409)."""

    code = ErrorCode.INCIDENT_FREEZE


class Unauthorized(OrisError):
    """No valid credential was presented (401)."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(OrisError):
    """The credential is valid but its role may not do this (403)."""

    code = ErrorCode.FORBIDDEN


class RateLimited(OrisError):
    """The credential exceeded its request rate (429)."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message, {"retry_after_seconds": retry_after_seconds})
        self.retry_after_seconds = retry_after_seconds


class Unavailable(OrisError):
    """Persistence cannot be reached or is not at the expected schema (503)."""

    code = ErrorCode.UNAVAILABLE


class SchemaVersionError(Exception):
    """The database schema does not match what this code supports."""


class MigrationLockTimeout(SchemaVersionError):
    """A migration gave up waiting for a lock (after its retries); names who held it."""


class PayloadTooLarge(OrisError):
    """The request body exceeds the configured limit (413)."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(OrisError):
    """The request body is not JSON (415)."""

    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class MethodNotAllowed(OrisError):
    """The path exists but not with this method (405)."""

    code = ErrorCode.METHOD_NOT_ALLOWED


class TransientConflict(Unavailable):
    """The database rolled the transaction back to break a deadlock or a serialization
    conflict; running it again is safe. Services retry it; 503 if it keeps happening."""
