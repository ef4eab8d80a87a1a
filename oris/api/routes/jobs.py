"""``/v1/jobs`` endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from oris.api.deps import (
    audit_read,
    audited,
    caller,
    json_body,
    request_id,
    runtime,
    set_audit_resource,
    with_override,
)
from oris.api.envelope import ok
from oris.api.models import (
    BulkCancelBody,
    CancelJobBody,
    PurgeJobsBody,
    ReplayJobBody,
    ResumeJobBody,
    RunJobBody,
)
from oris.services import bulk, jobs, resumption, retention
from oris.services.context import RequestContext
from oris.services.runtime import Runtime

router = APIRouter(prefix="/v1/jobs")
Ctx = Annotated[RequestContext, Depends(caller)]
Rt = Annotated[Runtime, Depends(runtime)]


async def _run(request: Request, rt: Runtime, ctx: RequestContext, body: RunJobBody) -> Response:
    set_audit_resource(request, body.thread_id)
    command = jobs.RunCommand(
        thread_id=body.thread_id,
        input=body.input,
        idempotency_key=body.idempotency_key,
        timeout_policy=None if body.timeout_policy is None else body.timeout_policy.model_dump(),
        priority=body.priority,
        tenant_id=body.tenant_id,
        workflow=body.workflow,
        retry_policy=None if body.retry_policy is None else body.retry_policy.model_dump(),
        run_at=body.run_at,
        delay_ms=body.delay_ms,
    )
    return ok(ctx.request_id, await jobs.run(rt.db, ctx, command))


@router.post("/run", dependencies=[Depends(audited("job.run", "thread"))])
async def run_job(
    request: Request, rt: Rt, ctx: Ctx, body: Annotated[RunJobBody, Depends(json_body(RunJobBody))]
) -> Response:
    """Queue a job run."""
    return await _run(request, rt, ctx, body)


@router.post("", dependencies=[Depends(audited("job.run", "thread"))])
async def create_job(
    request: Request, rt: Rt, ctx: Ctx, body: Annotated[RunJobBody, Depends(json_body(RunJobBody))]
) -> Response:
    """Same as ``POST /v1/jobs/run``."""
    return await _run(request, rt, ctx, body)


@router.post("/purge", dependencies=[Depends(audited("job.purge", "job"))])
async def purge_jobs(
    rt: Rt, ctx: Ctx, body: Annotated[PurgeJobsBody, Depends(json_body(PurgeJobsBody))]
) -> Response:
    """Delete one batch of finished jobs past a cut-off with all their rows (admin only)."""
    command = retention.PurgeCommand(
        status=body.status,
        older_than_seconds=body.older_than_seconds,
        dry_run=body.dry_run,
        limit=body.limit,
        thread_ids=body.thread_ids,
        include_rows=body.include_rows,
    )
    return ok(ctx.request_id, await retention.purge(rt, ctx, command))


@router.get("")
async def list_jobs(
    rt: Rt,
    ctx: Ctx,
    status: str | None = None,
    limit: Annotated[int | None, Query()] = None,
    offset: Annotated[int | None, Query()] = None,
    workflow: str | None = None,
    tenant_id: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    order: str | None = None,
    cursor: str | None = None,
    schedule_id: str | None = None,
) -> Response:
    """Jobs, most recently updated (or, with ``order=created``, created) first; page with
    ``offset`` or with the ``next_cursor`` of the previous page."""
    query = jobs.JobQuery(
        workflow=workflow,
        tenant_id=tenant_id,
        created_after=created_after,
        created_before=created_before,
        schedule_id=schedule_id,
    )
    data = await jobs.list_jobs(
        rt.db, status=status, limit=limit, offset=offset, query=query, order=order, cursor=cursor
    )
    return ok(ctx.request_id, data)


@router.post("/cancel", dependencies=[Depends(audited(bulk.CANCEL_ACTION, "jobs"))])
async def cancel_jobs(
    rt: Rt, ctx: Ctx, body: Annotated[BulkCancelBody, Depends(json_body(BulkCancelBody))]
) -> Response:
    """Cancel every live job the filter selects (``dry_run``: only say which)."""
    query = jobs.JobQuery(
        status=body.status,
        workflow=body.workflow,
        tenant_id=body.tenant_id,
        created_after=body.created_after,
        created_before=body.created_before,
        thread_ids=body.thread_ids,
        schedule_id=body.schedule_id,
    )
    data = await bulk.cancel_jobs(
        rt.db, ctx, query, limit=body.limit, dry_run=body.dry_run, reason=body.reason
    )
    return ok(ctx.request_id, data)


@router.get("/{thread_id}")
async def inspect_job(request: Request, rt: Rt, ctx: Ctx, thread_id: str) -> Response:
    """The job's latest state and true status."""
    data = await jobs.get_state(rt.db, thread_id)
    await audit_read(request, ctx, "job.read", "thread", thread_id)
    return ok(ctx.request_id, data)


@router.get("/{thread_id}/detail")
async def job_detail(request: Request, rt: Rt, ctx: Ctx, thread_id: str) -> Response:
    """State, history, timeline, attempts and the pending interrupt."""
    data = await jobs.detail(rt.db, thread_id)
    await audit_read(request, ctx, "job.read", "thread", thread_id)
    return ok(ctx.request_id, data)


@router.get("/{thread_id}/history")
async def job_history(rt: Rt, ctx: Ctx, thread_id: str) -> Response:
    """Checkpoints, oldest first."""
    return ok(ctx.request_id, await jobs.history(rt.db, thread_id))


@router.get("/{thread_id}/timeline")
async def job_timeline(rt: Rt, ctx: Ctx, thread_id: str) -> Response:
    """Every event of the job in order."""
    return ok(ctx.request_id, await jobs.timeline(rt.db, thread_id))


@router.get("/{thread_id}/timeline/export")
async def job_timeline_export(request: Request, rt: Rt, ctx: Ctx, thread_id: str) -> Response:
    """Timeline plus checkpoints with their state."""
    data = await jobs.timeline(rt.db, thread_id, export=True)
    await audit_read(request, ctx, "job.read", "thread", thread_id)
    return ok(ctx.request_id, data)


@router.get("/{thread_id}/checkpoints/{checkpoint_id}")
async def job_checkpoint(
    request: Request, rt: Rt, ctx: Ctx, thread_id: str, checkpoint_id: str
) -> Response:
    """One checkpoint's state."""
    data = await jobs.checkpoint(rt.db, thread_id, checkpoint_id)
    await audit_read(request, ctx, "checkpoint.read", "checkpoint", checkpoint_id)
    return ok(ctx.request_id, data)


@router.post(
    "/{thread_id}/cancel", dependencies=[Depends(audited("job.cancel", "thread", "thread_id"))]
)
async def cancel_job(
    rt: Rt,
    ctx: Ctx,
    thread_id: str,
    body: Annotated[CancelJobBody, Depends(json_body(CancelJobBody))],
) -> Response:
    """Cancel the job, its queued work and its lease."""
    return ok(ctx.request_id, await jobs.cancel(rt.db, ctx, thread_id, body.reason))


@router.post(
    "/{thread_id}/resume", dependencies=[Depends(audited("job.resume", "thread", "thread_id"))]
)
async def resume_job(
    rt: Rt,
    ctx: Ctx,
    thread_id: str,
    body: Annotated[ResumeJobBody, Depends(json_body(ResumeJobBody))],
) -> Response:
    """Resume the job's pending interrupt with a value."""
    ctx = with_override(ctx, body.override_reason)
    return ok(ctx.request_id, await resumption.resume_job(rt.db, ctx, thread_id, body.value))


@router.post(
    "/{thread_id}/replay", dependencies=[Depends(audited("job.replay", "thread", "thread_id"))]
)
async def replay_job(
    rt: Rt,
    ctx: Ctx,
    thread_id: str,
    body: Annotated[ReplayJobBody, Depends(json_body(ReplayJobBody))],
) -> Response:
    """Queue a replay from a checkpoint (or the latest); duplicates return the first result."""
    ctx = with_override(ctx, body.override_reason)
    return ok(ctx.request_id, await resumption.replay_job(rt, ctx, thread_id, body.checkpoint_id))


__all__ = ["request_id", "router"]
