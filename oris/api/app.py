"""The FastAPI application: middleware, error mapping, routers and the process lifespan."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oris.api.auth import Authenticator
from oris.api.deps import audit_spec, authenticated, request_id, runtime_of
from oris.api.envelope import STATUS_BY_CODE, JsonResponse, error, request_id_from
from oris.api.ratelimit import FailureLimiter, RateLimiter
from oris.api.routes import jobs, operators, schedules, workers
from oris.config import ServerSettings
from oris.domain.errors import ErrorCode, OrisError, RateLimited, Unavailable
from oris.observability.metrics import RuntimeMetrics
from oris.observability.tracing import SpanRecorder, build_tracing, trace_id_of
from oris.services import audit, health
from oris.services.bootstrap import check_auth_posture, open_database, prepare_database
from oris.services.context import Actor, RequestContext
from oris.services.keys import KeyVerifier
from oris.services.maintenance import MaintenanceLoop
from oris.services.runtime import Runtime

log = logging.getLogger("oris.api")
access_log = logging.getLogger("oris.access")


class RequestMiddleware:
    """Assigns the request id, enforces the body limit, and logs and counts every request."""

    def __init__(
        self, app: ASGIApp, metrics: RuntimeMetrics, max_body_bytes: int, tracing: SpanRecorder
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rid = request_id_from(headers.get("x-request-id"))
        scope["oris.request_id"] = rid
        started = time.perf_counter()
        status_holder = {"status": 500}
        limit = self.max_body_bytes

        response_started = {"started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started["started"] = True
                status_holder["status"] = message["status"]
                raw_headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw_headers):
                    raw_headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": raw_headers}
            await send(message)

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error(
                rid, ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes"
            )
            await response(scope, receive, send_wrapper)
            self._finish(scope, rid, status_holder["status"], started)
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        traceparent = headers.get("traceparent")
        method = scope.get("method", "")
        with self.tracing.span(f"{method} {scope.get('path', '')}", traceparent) as span:
            try:
                await self.app(scope, receive_limited, send_wrapper)
            except _BodyTooLarge:
                response = error(
                    rid, ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes"
                )
                await response(scope, receive, send_wrapper)
            except Exception:
                # Answer an unexpected error here, and do not let it propagate: Starlette's
                # outermost middleware would answer it too and then re-raise it, and an ASGI
                # server that sees an application raise after its response closes the
                # connection, so the client's next request on it fails with a reset.
                if response_started["started"]:
                    raise  # a response cut short: closing the connection is all that is left
                log.exception("unhandled error", extra={"request_id": rid})
                await _internal_error(rid)(scope, receive, send_wrapper)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            params = scope.get("path_params") or {}
            span.finish(
                f"{method} {route}",
                {
                    "http.request.method": method,
                    "http.route": route,
                    "http.response.status_code": status_holder["status"],
                    "oris.request_id": rid,
                    "oris.worker_id": params.get("worker_id"),
                    "oris.thread_id": params.get("thread_id"),
                },
            )
        self._finish(scope, rid, status_holder["status"], started, trace_id_of(traceparent))

    def _finish(
        self, scope: Scope, rid: str, status: int, started: float, trace_id: str | None = None
    ) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.http_request(method, template, status, elapsed)
        level = scope.get("oris.access_log_level", logging.INFO)
        access_log.log(
            level,
            "request",
            extra={
                "request_id": rid,
                "method": method,
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                **({"trace_id": trace_id} if trace_id else {}),
            },
        )


class _BodyTooLarge(Exception):
    pass


async def _audit_failure(request: Request, status: int, message: str) -> None:
    """Record a refused control-plane action or a denied request in its own transaction.

    Denials (401, 403, and 429 for too many failed credential checks) go through the
    aggregator, which turns a retry loop's identical denials into one row and a count."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None:
        return
    spec = audit_spec(request)
    denied = status in (401, 403) or bool(request.scope.get("oris.auth_throttled"))
    if spec is None and not denied:
        return
    actor = request.scope.get("oris.actor") or Actor()
    client = request.client
    ctx = RequestContext(
        request_id=request_id(request),
        actor=actor,
        source_addr=None if client is None else client.host,
    )
    route = request.scope.get("route")
    if spec is not None:
        action, resource_type, resource_id = spec[0].action, spec[0].resource_type, spec[1]
    else:
        action, resource_type, resource_id = (
            "auth.denied",
            "route",
            getattr(route, "path", request.url.path),
        )
    details = {"method": request.method, "path": request.url.path, "message": message}
    try:
        if denied:
            denials: audit.DenialAggregator = request.app.state.denials
            await denials.record(
                ctx,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                status_code=status,
                details=details,
            )
            return
        await audit.record(
            rt.db,
            ctx,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            result="error",
            status_code=status,
            details=details,
        )
    except Exception:
        log.exception(
            "could not write the audit row for a failed request",
            extra={"request_id": ctx.request_id},
        )


async def _oris_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrisError)
    status = STATUS_BY_CODE[exc.code]
    await _audit_failure(request, status, exc.message)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"retry-after": str(max(int(exc.retry_after_seconds + 0.999), 1))}
    return error(request_id(request), exc.code, exc.message, exc.details, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"field": ".".join(str(p) for p in item["loc"]), "message": item["msg"]}
        for item in exc.errors()
    ]
    await _audit_failure(request, 400, "invalid request")
    return error(
        request_id(request), ErrorCode.INVALID_ARGUMENT, "invalid request", {"fields": fields}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.METHOD_NOT_ALLOWED,
        413: ErrorCode.PAYLOAD_TOO_LARGE,
        415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    }.get(
        exc.status_code, ErrorCode.INVALID_ARGUMENT if exc.status_code < 500 else ErrorCode.INTERNAL
    )
    message = {404: "no route matches this path", 405: "method not allowed on this path"}.get(
        exc.status_code, str(exc.detail)
    )
    response = error(request_id(request), code, message)
    response.status_code = exc.status_code
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _internal_error(rid: str) -> Response:
    return error(rid, ErrorCode.INTERNAL, "internal error; see the server log for this request id")


async def _unexpected(request: Request, exc: Exception) -> Response:
    """An error no handler took and that :class:`RequestMiddleware` did not see (one raised in
    a middleware outside it)."""
    log.exception("unhandled error", extra={"request_id": request_id(request)})
    return _internal_error(request_id(request))


def create_app(settings: ServerSettings, *, run_maintenance: bool = True) -> FastAPI:
    """Build the application; the database is opened and checked in the lifespan.

    ``run_maintenance=False`` (tests that drive sweeps themselves) also leaves the queue counts
    of ``/metrics`` to each scrape instead of the background refresher."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = open_database(settings, application_name="oris-api")
        try:
            await prepare_database(settings, database)
            rt = Runtime(db=database, settings=settings, metrics=metrics)
            failures = FailureLimiter(
                settings.auth_max_failures_per_window, settings.auth_failure_window_seconds
            )
            authenticator = Authenticator(settings, KeyVerifier(database), failures)
            await check_auth_posture(settings, database, authenticator.static_credentials)
            app.state.runtime = rt
            app.state.authenticator = authenticator
            denials = audit.DenialAggregator(database, settings.audit_denial_window_seconds)
            app.state.denials = denials
            denials.start()
            loop = MaintenanceLoop(rt)
            counts = health.CountRefresher(rt)
            app.state.counts = counts
            if run_maintenance:
                loop.start()
                counts.start()
            try:
                yield
            finally:
                await counts.stop()
                await loop.stop()
                await denials.stop()
                tracing.shutdown()
        finally:
            await database.dispose()

    metrics = RuntimeMetrics(settings.metrics_rate_window_seconds)
    app = FastAPI(
        title="Oris runtime",
        version="v1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Served below behind authentication, like every /v1 route.
        openapi_url=None,
    )
    app.add_exception_handler(OrisError, _oris_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(jobs.router)
    app.include_router(workers.router)
    app.include_router(operators.router)
    app.include_router(schedules.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        outcome = await health.check(runtime_of(request))
        return JsonResponse(
            {**outcome.body, "request_id": request_id(request)},
            status_code=200 if outcome.ok else 503,
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        # The API description follows auth: any valid credential may read it (no role
        # needed), nobody without one when authentication is on.
        await authenticated(request)
        return JsonResponse(app.openapi())

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        rt = runtime_of(request)
        gauges: Any = None
        try:
            gauges = await health.database_gauges(rt, request.app.state.counts.fresh())
        except* Unavailable:  # the reads run in a task group, which wraps what they raise
            gauges = None
        except* Exception:
            log.exception("metrics: database gauges failed")
        return PlainTextResponse(
            rt.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    tracing = build_tracing("oris-api")
    app.add_middleware(
        RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes, tracing=tracing
    )
    app.state.metrics = metrics
    app.state.tracing = tracing
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    return app
