"""``/v1/workers`` endpoints: the worker protocol."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from oris.api.auth import authorize_worker_id
from oris.api.deps import caller, json_body, runtime
from oris.api.envelope import STATUS_BY_CODE, ok
from oris.api.models import (
    AckBatchBody,
    AckBatchItem,
    AckBody,
    HeartbeatBody,
    PollBody,
    ReportStepBody,
)
from oris.observability.tracing import SpanRecorder
from oris.services import scheduler
from oris.services.context import RequestContext
from oris.services.runtime import Runtime

router = APIRouter(prefix="/v1/workers")
Ctx = Annotated[RequestContext, Depends(caller)]
Rt = Annotated[Runtime, Depends(runtime)]


@router.post("/poll")
async def poll(
    request: Request,
    rt: Rt,
    ctx: Ctx,
    body: Annotated[PollBody, Depends(json_body(PollBody))],
) -> Response:
    """Lease work: ``dispatched``, ``noop`` or ``backpressure`` (always 200).

    ``acks`` (an extension) are applied first and answered in ``data.acks``, one result per
    ack as ``/acks`` answers them: a worker's finished attempts and its next poll in one trip.
    """
    authorize_worker_id(ctx.actor, body.worker_id)
    command = scheduler.PollCommand(
        worker_id=body.worker_id,
        limit=body.limit,
        max_active_leases=body.max_active_leases,
        tenant_max_active_leases=body.tenant_max_active_leases,
        workflows=body.workflows,
        wait_ms=body.wait_ms,
        workflow_defaults=None
        if body.workflow_defaults is None
        else {name: item.model_dump() for name, item in body.workflow_defaults.items()},
    )
    if body.acks is None:
        answer = await scheduler.poll(rt, command)
        _quiet_if_idle(request, answer)
        return ok(ctx.request_id, answer)
    data, answers = await scheduler.ack_and_poll(
        rt, command, [_ack_command(item) for item in body.acks]
    )
    data["acks"] = _ack_results(request, ctx, body.worker_id, body.acks, answers)
    return ok(ctx.request_id, data)


def _quiet_if_idle(request: Request, answer: dict[str, Any]) -> None:
    """An idle worker long-polls every few seconds: its "no work" answers are logged at debug
    so they do not drown the access log (dispatches, refusals and errors stay at info)."""
    if answer.get("decision") == "noop":
        request.scope["oris.access_log_level"] = logging.DEBUG


@router.post("/{worker_id}/heartbeat")
@router.post("/{worker_id}/extend-lease")
async def heartbeat(
    rt: Rt,
    ctx: Ctx,
    worker_id: str,
    body: Annotated[HeartbeatBody, Depends(json_body(HeartbeatBody))],
) -> Response:
    """Extend a live lease (``extend-lease`` is the same operation under upstream's name)."""
    authorize_worker_id(ctx.actor, worker_id)
    return ok(
        ctx.request_id,
        await scheduler.heartbeat(
            rt, worker_id, body.lease_id, body.lease_ttl_seconds, settling=bool(body.settling)
        ),
    )


@router.post("/{worker_id}/report-step")
async def report_step(
    rt: Rt,
    ctx: Ctx,
    worker_id: str,
    body: Annotated[ReportStepBody, Depends(json_body(ReportStepBody))],
) -> Response:
    """Record a finished step, optionally with a checkpoint."""
    authorize_worker_id(ctx.actor, worker_id)
    report = scheduler.StepReport(
        attempt_id=body.attempt_id,
        action_id=body.action_id,
        status=body.status,
        dedupe_token=body.dedupe_token,
        lease_id=body.lease_id,
        checkpoint=None if body.checkpoint is None else body.checkpoint.model_dump(),
    )
    return ok(ctx.request_id, await scheduler.report_step(rt, worker_id, report))


@router.post("/{worker_id}/ack")
async def ack(
    rt: Rt, ctx: Ctx, worker_id: str, body: Annotated[AckBody, Depends(json_body(AckBody))]
) -> Response:
    """Finish a lease: completed, failed (retry or DLQ), cancelled or interrupted."""
    authorize_worker_id(ctx.actor, worker_id)
    return ok(ctx.request_id, await scheduler.ack(rt, worker_id, _ack_command(body)))


@router.post("/{worker_id}/acks")
async def ack_batch(
    request: Request,
    rt: Rt,
    ctx: Ctx,
    worker_id: str,
    body: Annotated[AckBatchBody, Depends(json_body(AckBatchBody))],
) -> Response:
    """Many acks at once; each item is answered like ``/ack`` would answer it, in order."""
    authorize_worker_id(ctx.actor, worker_id)
    answers = await scheduler.ack_many(rt, worker_id, [_ack_command(item) for item in body.acks])
    return ok(
        ctx.request_id, {"results": _ack_results(request, ctx, worker_id, body.acks, answers)}
    )


def _ack_results(
    request: Request,
    ctx: RequestContext,
    worker_id: str,
    items: list[AckBatchItem],
    answers: list[scheduler.AckResult],
) -> list[dict[str, Any]]:
    """One ``{attempt_id, ok, data}`` or ``{attempt_id, ok, status, error}`` per ack, in order."""
    results: list[dict[str, Any]] = []
    tracing: SpanRecorder = request.app.state.tracing
    for item, (data, error) in zip(items, answers, strict=True):
        if item.traceparent:
            # Each traced ack shows in its job's trace, as a single /ack would.
            with tracing.span("POST /v1/workers/{worker_id}/acks item", item.traceparent) as span:
                span.finish(
                    "POST /v1/workers/{worker_id}/acks item",
                    {
                        "oris.request_id": ctx.request_id,
                        "oris.worker_id": worker_id,
                        "oris.attempt_id": item.attempt_id,
                        "http.response.status_code": 200
                        if error is None
                        else STATUS_BY_CODE[error.code],
                    },
                )
        if error is None:
            results.append({"attempt_id": item.attempt_id, "ok": True, "data": data})
        else:
            results.append(
                {
                    "attempt_id": item.attempt_id,
                    "ok": False,
                    "status": STATUS_BY_CODE[error.code],
                    "error": {
                        "code": error.code.value,
                        "message": error.message,
                        "details": error.details,
                    },
                }
            )
    return results


def _ack_command(body: AckBody) -> scheduler.AckCommand:
    return scheduler.AckCommand(
        attempt_id=body.attempt_id,
        terminal_status=body.terminal_status,
        retry_policy=None if body.retry_policy is None else body.retry_policy.model_dump(),
        lease_id=body.lease_id,
        output=body.output,
        error=None if body.error is None else body.error.model_dump(exclude_none=True),
        interrupt=None if body.interrupt is None else body.interrupt.model_dump(),
        wake_at=body.wake_at,
    )
