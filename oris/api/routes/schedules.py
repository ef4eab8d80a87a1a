"""``/v1/schedules`` endpoints: recurring runs of a workflow (an extension)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from oris.api.deps import audit_read, audited, caller, json_body, runtime, set_audit_resource
from oris.api.envelope import ok
from oris.api.models import CreateScheduleBody
from oris.services import schedules
from oris.services.context import RequestContext
from oris.services.runtime import Runtime

router = APIRouter(prefix="/v1/schedules")
Ctx = Annotated[RequestContext, Depends(caller)]
Rt = Annotated[Runtime, Depends(runtime)]


@router.post("", dependencies=[Depends(audited("schedule.create", "schedule"))])
async def create_schedule(
    request: Request,
    rt: Rt,
    ctx: Ctx,
    body: Annotated[CreateScheduleBody, Depends(json_body(CreateScheduleBody))],
) -> Response:
    """Define a schedule; the same definition again answers with ``created: false``."""
    set_audit_resource(request, body.schedule_id)
    command = schedules.ScheduleCommand(
        schedule_id=body.schedule_id,
        workflow=body.workflow,
        input=body.input,
        cron=body.cron,
        every_seconds=body.every_seconds,
        timezone=body.timezone,
        tenant_id=body.tenant_id,
        priority=body.priority,
        retry_policy=None if body.retry_policy is None else body.retry_policy.model_dump(),
        overlap=body.overlap,
        catch_up=body.catch_up,
    )
    return ok(ctx.request_id, await schedules.create(rt.db, ctx, command))


@router.get("")
async def list_schedules(
    rt: Rt,
    ctx: Ctx,
    limit: Annotated[int | None, Query()] = None,
    offset: Annotated[int | None, Query()] = None,
) -> Response:
    """Schedules by id."""
    return ok(ctx.request_id, await schedules.list_schedules(rt.db, limit=limit, offset=offset))


@router.get("/{schedule_id}")
async def get_schedule(request: Request, rt: Rt, ctx: Ctx, schedule_id: str) -> Response:
    """One schedule: its definition, status and next tick."""
    data = await schedules.get(rt.db, schedule_id)
    await audit_read(request, ctx, "schedule.read", "schedule", schedule_id)
    return ok(ctx.request_id, data)


@router.post(
    "/{schedule_id}/pause",
    dependencies=[Depends(audited("schedule.pause", "schedule", "schedule_id"))],
)
async def pause_schedule(rt: Rt, ctx: Ctx, schedule_id: str) -> Response:
    """Stop ticking (ticks meanwhile are counted as skipped)."""
    return ok(ctx.request_id, await schedules.set_paused(rt.db, ctx, schedule_id, paused=True))


@router.post(
    "/{schedule_id}/resume",
    dependencies=[Depends(audited("schedule.resume", "schedule", "schedule_id"))],
)
async def resume_schedule(rt: Rt, ctx: Ctx, schedule_id: str) -> Response:
    """Tick again from the next tick after now."""
    return ok(ctx.request_id, await schedules.set_paused(rt.db, ctx, schedule_id, paused=False))


@router.post(
    "/{schedule_id}/trigger",
    dependencies=[Depends(audited("schedule.trigger", "schedule", "schedule_id"))],
)
async def trigger_schedule(rt: Rt, ctx: Ctx, schedule_id: str) -> Response:
    """Queue one run now, outside the calendar."""
    return ok(ctx.request_id, await schedules.trigger(rt, ctx, schedule_id))


@router.delete(
    "/{schedule_id}",
    dependencies=[Depends(audited("schedule.delete", "schedule", "schedule_id"))],
)
async def delete_schedule(rt: Rt, ctx: Ctx, schedule_id: str) -> Response:
    """Remove the schedule; the jobs it queued stay."""
    return ok(ctx.request_id, await schedules.delete(rt.db, ctx, schedule_id))
