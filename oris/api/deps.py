"""Per-request plumbing shared by the routers: the runtime, the caller, JSON bodies, audit."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from oris.api.auth import Authenticator, Throttled, authorize, authorize_worker_id
from oris.api.ratelimit import RateLimiter
from oris.domain.errors import (
    Forbidden,
    InvalidArgument,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from oris.services import audit
from oris.services.context import Actor, RequestContext, Role
from oris.services.runtime import Runtime

M = TypeVar("M", bound=BaseModel)
OVERRIDE_HEADER = "x-oris-incident-override"


def runtime_of(request: Request) -> Runtime:
    """The process's runtime handles."""
    rt: Runtime = request.app.state.runtime
    return rt


async def runtime(request: Request) -> Runtime:
    """:func:`runtime_of` as a dependency (async: FastAPI runs plain functions in a thread)."""
    return runtime_of(request)


def request_id(request: Request) -> str:
    """The id the middleware assigned to this request."""
    return str(request.scope.get("oris.request_id", ""))


@dataclass(frozen=True, slots=True)
class AuditSpec:
    """How a control-plane route is recorded in the audit log."""

    action: str
    resource_type: str
    resource_param: str | None


def audited(
    action: str, resource_type: str, resource_param: str | None = None
) -> Callable[[Request], Awaitable[None]]:
    """Dependency marking a route as audited, so failures are recorded too."""

    async def mark(request: Request) -> None:
        request.scope["oris.audit"] = AuditSpec(action, resource_type, resource_param)

    return mark


def audit_spec(request: Request) -> tuple[AuditSpec, str | None] | None:
    """The route's audit spec and resource id, if the route is audited."""
    spec = request.scope.get("oris.audit")
    if not isinstance(spec, AuditSpec):
        return None
    resource = request.scope.get("oris.audit_resource")
    if resource is None and spec.resource_param is not None:
        resource = request.path_params.get(spec.resource_param)
    return spec, None if resource is None else str(resource)


def set_audit_resource(request: Request, resource_id: str | None) -> None:
    """Name the resource of an audited route whose id comes from the body."""
    request.scope["oris.audit_resource"] = resource_id


THROTTLED_MESSAGE = "too many failed credential checks; retry later"


async def authenticated(request: Request) -> Actor:
    """The caller's actor (401, or 429 after too many failed checks, in the envelope)."""
    authenticator: Authenticator = request.app.state.authenticator
    try:
        actor = await authenticator.authenticate(request)
    except Unauthorized:
        request.scope["oris.actor"] = Actor()
        raise
    except Throttled as throttled:
        request.scope["oris.actor"] = Actor()
        # A refusal of a credential check: audited like a 401.
        request.scope["oris.auth_throttled"] = True
        raise RateLimited(THROTTLED_MESSAGE, throttled.retry_after_seconds) from None
    request.scope["oris.actor"] = actor
    return actor


async def caller(request: Request) -> RequestContext:
    """Authenticate and authorise the request; 401/403 in the envelope otherwise.

    A worker key bound to a prefix is checked against the path's worker id here, before any
    body is parsed, so acting as another worker is a 403 whatever the body holds."""
    actor = await authenticated(request)
    client = request.client
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.enabled:
        key = f"{actor.actor_type}:{actor.actor_id or (client.host if client else '-')}"
        wait = limiter.acquire(key)
        if wait > 0:
            raise RateLimited("rate limit exceeded for this credential", wait)
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    try:
        authorize(actor, request.method, request.url.path)
        worker_id = request.path_params.get("worker_id")
        authorize_worker_id(actor, worker_id if isinstance(worker_id, str) else None)
    except Forbidden as error:
        if error.details is not None:
            error.details["path"] = path
        raise
    return RequestContext(
        request_id=request_id(request),
        actor=actor,
        source_addr=None if client is None else client.host,
        traceparent=request.headers.get("traceparent"),
        freeze_override_reason=request.headers.get(OVERRIDE_HEADER),
    )


def with_override(ctx: RequestContext, reason: str | None) -> RequestContext:
    """The context with an incident-freeze override taken from the request body."""
    if not reason:
        return ctx
    return replace(ctx, freeze_override_reason=reason)


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """Dependency that parses a JSON object body into ``model`` (415/400 in the envelope)."""

    async def parse(request: Request) -> M:
        raw = await request.body()
        if not raw.strip():
            data: Any = {}
        else:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise UnsupportedMediaType("request body must be sent as application/json")
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise InvalidArgument(f"malformed JSON body: {error}") from None
            refuse_wide_integers(raw)
        if not isinstance(data, dict):
            raise InvalidArgument("request body must be a JSON object")
        _authorize_body_worker(request, data)
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise InvalidArgument("invalid request body", {"fields": field_errors(error)}) from None

    return parse


def _authorize_body_worker(request: Request, data: dict[str, Any]) -> None:
    """A body naming a worker (a poll's ``worker_id``) is checked against the caller's worker
    prefix before the rest of it is validated: 403, not 400, for another prefix's worker."""
    actor = request.scope.get("oris.actor")
    worker_id = data.get("worker_id")
    if isinstance(actor, Actor) and isinstance(worker_id, str):
        try:
            authorize_worker_id(actor, worker_id)
        except Forbidden as error:
            if error.details is not None:
                route = request.scope.get("route")
                error.details["path"] = getattr(route, "path", request.url.path)
            raise


# The widest integers JSON bodies may carry: what the JSON parser keeps exactly (it reads a
# wider one as a float, silently rounded) and what can be written back.
JSON_INT_MIN = -(2**63)
JSON_INT_MAX = 2**64 - 1
# Digit runs that may spell such an integer: 20 digits, or a minus sign and 19.
_WIDE_DIGITS = re.compile(rb"\d{20}|-\d{19}")


class _TooWide(ValueError):
    pass


def _exact_int(digits: str) -> int:
    try:
        value = int(digits)
    except ValueError:  # more digits than Python converts
        raise _TooWide from None
    if not JSON_INT_MIN <= value <= JSON_INT_MAX:
        raise _TooWide
    return value


def refuse_wide_integers(raw: bytes) -> None:
    """400 when a JSON body holds an integer beyond 64 bits anywhere (``input``, ``output``,
    a checkpoint's ``state``, a resume ``value``…): it would be kept as a rounded float.

    A cheap scan for long digit runs first; only a body that has one (in a number or inside
    a string) is parsed a second time, by a parser that reports integers exactly."""
    if _WIDE_DIGITS.search(raw) is None:
        return
    try:
        json.loads(raw, parse_int=_exact_int)
    except _TooWide:
        raise InvalidArgument(
            f"JSON integers must be between {JSON_INT_MIN} and {JSON_INT_MAX}; "
            "send wider numbers as strings"
        ) from None
    except RecursionError:
        raise InvalidArgument("JSON body is nested too deeply") from None
    except ValueError:  # the fast parser accepted it; nothing more to learn here
        return


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{field, message}]`` without echoing input values."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "message": item["msg"]}
        for item in error.errors()
    ]


async def audit_read(
    request: Request, ctx: RequestContext, action: str, resource_type: str, resource_id: str
) -> None:
    """Record a non-admin read of a payload-bearing resource (fails closed: no row, no data)."""
    if ctx.actor.role is Role.ADMIN or ctx.actor.actor_type == "anonymous":
        return
    rt = runtime_of(request)
    await audit.record(
        rt.db,
        ctx,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        result="success",
        status_code=200,
        details={"method": request.method, "path": request.url.path},
    )
