"""Errors the client raises: one exception type per API error code, and the job outcomes
that :meth:`oris.client.Client.wait` turns into exceptions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from oris.client.models import Job


class ServerUnreachable(Exception):
    """The API did not answer (connection refused, timeout, DNS)."""


class ApiError(Exception):
    """The API answered with an error envelope (or a non-JSON error).

    The subclass names the error ``code``; ``status`` is the HTTP status, ``details`` the
    envelope's details and ``request_id`` the id the server logged the request under."""

    code_name: ClassVar[str | None] = None

    def __init__(
        self, status: int, code: str, message: str, request_id: str | None, details: Any = None
    ) -> None:
        super().__init__(f"{status} {code}: {message} (request_id={request_id})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (server-side or availability errors)."""
        return self.status >= 500 or self.status == 429


class InvalidArgumentError(ApiError):
    """400 ``invalid_argument``: the request is malformed (``details`` names the fields)."""

    code_name = "invalid_argument"


class UnauthorizedError(ApiError):
    """401 ``unauthorized``: no valid credential (check ``ORIS_API_TOKEN`` / ``ORIS_API_KEY``)."""

    code_name = "unauthorized"


class ForbiddenError(ApiError):
    """403 ``forbidden``: the credential's role may not call this endpoint."""

    code_name = "forbidden"


class NotFoundError(ApiError):
    """404 ``not_found``: no such job, interrupt, checkpoint or dead letter."""

    code_name = "not_found"


class MethodNotAllowedError(ApiError):
    """405 ``method_not_allowed``."""

    code_name = "method_not_allowed"


class ConflictError(ApiError):
    """409 ``conflict``: the resource's state does not allow this (e.g. cancel a finished job)."""

    code_name = "conflict"


class IncidentFreezeError(ConflictError):
    """409 ``incident_freeze``: an incident is open; repeat with an ``override_reason``."""

    code_name = "incident_freeze"


class PayloadTooLargeError(ApiError):
    """413 ``payload_too_large``."""

    code_name = "payload_too_large"


class UnsupportedMediaTypeError(ApiError):
    """415 ``unsupported_media_type``."""

    code_name = "unsupported_media_type"


class RateLimitedError(ApiError):
    """429 ``rate_limited``: slow down; ``details["retry_after_seconds"]`` says how long."""

    code_name = "rate_limited"


class InternalError(ApiError):
    """500 ``internal``: the server failed; its log has the ``request_id``."""

    code_name = "internal"


class UnavailableError(ApiError):
    """503 ``unavailable``: the server cannot reach its database right now."""

    code_name = "unavailable"


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    error.code_name: error
    for error in (
        InvalidArgumentError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        IncidentFreezeError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        RateLimitedError,
        InternalError,
        UnavailableError,
    )
    if error.code_name is not None
}


def api_error(
    status: int, code: str, message: str, request_id: str | None, details: Any = None
) -> ApiError:
    """The exception for an error envelope: its code's type, else a plain :class:`ApiError`."""
    kind = ERRORS_BY_CODE.get(code, ApiError)
    return kind(status, code, message, request_id, details)


class JobError(Exception):
    """A job did not end the way :meth:`~oris.client.Client.wait` waits for."""

    def __init__(self, message: str, job: Job | None, thread_id: str) -> None:
        super().__init__(message)
        self.job = job
        self.thread_id = thread_id


class JobFailed(JobError):
    """The job failed for good (its retries are spent); ``job.error`` says why."""


class JobCancelled(JobError):
    """The job was cancelled (by an operator, or its interrupt was rejected)."""


class WaitTimeout(JobError, TimeoutError):
    """The job had not finished when the wait's timeout elapsed; ``job`` is its last state."""


class SubmitManyError(Exception):
    """``submit_many`` stopped at a refused job: ``submitted`` holds the jobs queued before it,
    ``index`` the position of the refused one and ``__cause__`` the API's error."""

    def __init__(self, index: int, submitted: list[Any], error: ApiError) -> None:
        super().__init__(f"job {index} of the batch was refused: {error}")
        self.index = index
        self.submitted = submitted
        self.error = error
