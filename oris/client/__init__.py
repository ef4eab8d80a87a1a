"""The Python client for the Oris API (see docs/client.md).

Applications use :class:`Client` (synchronous) or :class:`AsyncClient`; the worker, the
operator CLI and the drills use the endpoint-per-method :class:`OrisClient` underneath.
"""

from oris.client.api import AsyncClient, Client
from oris.client.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    IncidentFreezeError,
    InternalError,
    InvalidArgumentError,
    JobCancelled,
    JobError,
    JobFailed,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerUnreachable,
    SubmitManyError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    WaitTimeout,
)
from oris.client.http import OrisClient
from oris.client.models import (
    Cancellation,
    Interrupt,
    Job,
    JobPage,
    JobSpec,
    JobSummary,
    Queued,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Cancellation",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "IncidentFreezeError",
    "InternalError",
    "Interrupt",
    "InvalidArgumentError",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobPage",
    "JobSpec",
    "JobSummary",
    "MethodNotAllowedError",
    "NotFoundError",
    "OrisClient",
    "PayloadTooLargeError",
    "Queued",
    "RateLimitedError",
    "ServerUnreachable",
    "SubmitManyError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "WaitTimeout",
]
