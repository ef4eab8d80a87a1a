"""Operator endpoints: interrupts, attempts, the DLQ, the audit log and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from oris.api.auth import Authenticator
from oris.api.deps import audit_read, audited, caller, json_body, runtime, with_override
from oris.api.envelope import ok
from oris.api.models import (
    ArchiveAuditBody,
    BulkReplayBody,
    CloseIncidentBody,
    CreateKeyBody,
    OpenIncidentBody,
    RejectInterruptBody,
    ResumeInterruptBody,
    RotateKeyBody,
)
from oris.domain.clock import to_rfc3339
from oris.domain.errors import InvalidArgument
from oris.domain.paging import Cursor, check_cursor, decode_cursor, encode_cursor, fingerprint
from oris.domain.validation import INT64_MAX, check_range, check_text, clamp_limit
from oris.services import audit, bulk, health, incidents, keys, resumption
from oris.services.audit import AuditFilter
from oris.services.context import RequestContext
from oris.services.runtime import Runtime

router = APIRouter(prefix="/v1")
Ctx = Annotated[RequestContext, Depends(caller)]
Rt = Annotated[Runtime, Depends(runtime)]
AUDIT_DEFAULT_LIMIT = 100
AUDIT_MAX_LIMIT = 500
AUTH_TURNED_ON_WARNING = (
    "this is the first credential: authentication is now required on every /v1 route, "
    "so running workers and clients without a credential are refused (401) from now on"
)


@router.get("/interrupts")
async def list_interrupts(
    rt: Rt, ctx: Ctx, status: str | None = None, run_id: str | None = None, limit: int | None = None
) -> Response:
    """Interrupts, newest first."""
    return ok(
        ctx.request_id,
        await resumption.list_interrupts(rt.db, status=status, run_id=run_id, limit=limit),
    )


@router.get("/interrupts/{interrupt_id}")
async def get_interrupt(request: Request, rt: Rt, ctx: Ctx, interrupt_id: str) -> Response:
    """One interrupt."""
    data = await resumption.get_interrupt(rt.db, interrupt_id)
    await audit_read(request, ctx, "interrupt.read", "interrupt", interrupt_id)
    return ok(ctx.request_id, data)


@router.post(
    "/interrupts/{interrupt_id}/resume",
    dependencies=[Depends(audited("interrupt.resume", "interrupt", "interrupt_id"))],
)
async def resume_interrupt(
    rt: Rt,
    ctx: Ctx,
    interrupt_id: str,
    body: Annotated[ResumeInterruptBody, Depends(json_body(ResumeInterruptBody))],
) -> Response:
    """Resume with a value; a repeat with the same value returns the first response."""
    ctx = with_override(ctx, body.override_reason)
    return ok(
        ctx.request_id, await resumption.resume_interrupt(rt.db, ctx, interrupt_id, body.value)
    )


@router.post(
    "/interrupts/{interrupt_id}/reject",
    dependencies=[Depends(audited("interrupt.reject", "interrupt", "interrupt_id"))],
)
async def reject_interrupt(
    rt: Rt,
    ctx: Ctx,
    interrupt_id: str,
    body: Annotated[RejectInterruptBody, Depends(json_body(RejectInterruptBody))],
) -> Response:
    """Reject: the job is cancelled with the caller's reason."""
    return ok(
        ctx.request_id, await resumption.reject_interrupt(rt.db, ctx, interrupt_id, body.reason)
    )


@router.get("/attempts/{attempt_id}/retries")
async def attempt_retries(rt: Rt, ctx: Ctx, attempt_id: str) -> Response:
    """Retry history of an attempt."""
    return ok(ctx.request_id, await resumption.attempt_retries(rt.db, attempt_id))


@router.get("/dlq")
async def list_dead_letters(
    rt: Rt,
    ctx: Ctx,
    status: str | None = None,
    limit: int | None = None,
    workflow: str | None = None,
    tenant_id: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    cursor: str | None = None,
) -> Response:
    """Dead letters, newest first; page with the ``next_cursor`` of the previous page."""
    query = resumption.DeadLetterQuery(
        workflow=workflow,
        tenant_id=tenant_id,
        created_after=created_after,
        created_before=created_before,
    )
    data = await resumption.list_dead_letters(
        rt.db, status=status, limit=limit, query=query, cursor=cursor
    )
    return ok(ctx.request_id, data)


@router.post("/dlq/replay", dependencies=[Depends(audited(bulk.REPLAY_ACTION, "dlq"))])
async def replay_dead_letters(
    rt: Rt, ctx: Ctx, body: Annotated[BulkReplayBody, Depends(json_body(BulkReplayBody))]
) -> Response:
    """Replay every pending dead letter the filter selects (``dry_run``: only say which)."""
    ctx = with_override(ctx, body.override_reason)
    query = resumption.DeadLetterQuery(
        status=body.status,
        workflow=body.workflow,
        tenant_id=body.tenant_id,
        created_after=body.created_after,
        created_before=body.created_before,
        thread_ids=body.thread_ids,
    )
    data = await bulk.replay_dead_letters(rt.db, ctx, query, limit=body.limit, dry_run=body.dry_run)
    return ok(ctx.request_id, data)


@router.get("/dlq/{attempt_id}")
async def get_dead_letter(request: Request, rt: Rt, ctx: Ctx, attempt_id: str) -> Response:
    """One dead letter."""
    data = await resumption.get_dead_letter(rt.db, attempt_id)
    await audit_read(request, ctx, "dlq.read", "attempt", attempt_id)
    return ok(ctx.request_id, data)


@router.post(
    "/dlq/{attempt_id}/replay",
    dependencies=[Depends(audited("dlq.replay", "attempt", "attempt_id"))],
)
async def replay_dead_letter(rt: Rt, ctx: Ctx, attempt_id: str) -> Response:
    """Requeue a dead letter with a fresh retry budget."""
    return ok(ctx.request_id, await resumption.replay_dead_letter(rt.db, ctx, attempt_id))


@router.get("/audit/logs")
async def audit_logs(
    rt: Rt,
    ctx: Ctx,
    request_id: str | None = None,
    action: str | None = None,
    actor_id: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    result: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    before_id: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Response:
    """Audit rows, newest first; page with ``next_cursor`` (or upstream's ``before_id``)."""
    for name, value in (("from_ms", from_ms), ("to_ms", to_ms), ("before_id", before_id)):
        if value is not None:
            check_range(name, value, 0, INT64_MAX)
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise InvalidArgument("from_ms must be less than or equal to to_ms")
    resolved = clamp_limit(limit, default=AUDIT_DEFAULT_LIMIT, maximum=AUDIT_MAX_LIMIT)

    def blank(value: str | None) -> str | None:
        return (check_text("audit filters", value) or "").strip() or None

    filter_values = {
        "request_id": blank(request_id),
        "action": blank(action),
        "actor_id": blank(actor_id),
        "resource_type": blank(resource_type),
        "resource_id": blank(resource_id),
        "result": blank(result),
        "from_ms": from_ms,
        "to_ms": to_ms,
    }
    digest = fingerprint(filter_values)
    if cursor is not None:
        if before_id is not None:
            raise InvalidArgument("cursor and before_id cannot be combined")
        parsed = decode_cursor(cursor, kind="audit", key_types=(int,))
        check_cursor(parsed, order="audit_id", filters_fingerprint=digest)
        before_id = int(parsed.key[0])
    filters = AuditFilter(
        request_id=blank(request_id),
        action=blank(action),
        actor_id=blank(actor_id),
        resource_type=blank(resource_type),
        resource_id=blank(resource_id),
        result=blank(result),
        from_ms=from_ms,
        to_ms=to_ms,
        before_id=before_id,
    )
    rows = await audit.list_logs(rt.db, filters, resolved)
    logs = [
        {
            "audit_id": row.audit_id,
            "actor_type": row.actor_type,
            "actor_id": row.actor_id,
            "actor_role": row.actor_role,
            "action": row.action,
            "resource_type": row.resource_type,
            "resource_id": row.resource_id,
            "result": row.result,
            "status_code": row.status_code,
            "request_id": row.request_id,
            "source_addr": row.source_addr,
            "details": row.details,
            "created_at": _rfc3339(row.created_at_ms),
            "row_hash": row.row_hash,
        }
        for row in rows
    ]
    next_before = logs[-1]["audit_id"] if len(logs) == resolved else None
    next_cursor = None
    if next_before is not None:
        next_cursor = encode_cursor(Cursor("audit", "audit_id", digest, (next_before,)))
    return ok(
        ctx.request_id, {"logs": logs, "next_before_id": next_before, "next_cursor": next_cursor}
    )


def _rfc3339(epoch_ms: int) -> str:
    return to_rfc3339(epoch_ms)


@router.get("/audit/verify")
async def audit_verify(rt: Rt, ctx: Ctx) -> Response:
    """Walk the audit hash chain and name the first altered row, if any."""
    report = await audit.verify_chain(rt.db)
    return ok(
        ctx.request_id,
        {
            "ok": report.ok,
            "rows_checked": report.rows_checked,
            "first_bad_audit_id": report.first_bad_audit_id,
            "problem": report.problem,
            "anchor": audit.anchor_view(report.anchor),
        },
    )


@router.post("/audit/archive", dependencies=[Depends(audited("audit.archive", "audit_log"))])
async def audit_archive(
    rt: Rt, ctx: Ctx, body: Annotated[ArchiveAuditBody, Depends(json_body(ArchiveAuditBody))]
) -> Response:
    """Archive the oldest audit rows: a dry run reads them in chain order; a real run removes
    them through a named row and keeps an anchor, so the rest still verifies (admin only)."""
    if body.dry_run:
        data = await audit.archive_preview(rt.db, before_ms=body.before_ms, limit=body.limit)
        return ok(ctx.request_id, data)
    if body.through_audit_id is None or body.through_row_hash is None:
        raise InvalidArgument(
            "a real archive names the last archived row: through_audit_id and through_row_hash "
            "(read them with dry_run first)"
        )
    data = await audit.archive(
        rt.db,
        ctx,
        before_ms=body.before_ms,
        through_audit_id=body.through_audit_id,
        through_row_hash=body.through_row_hash,
    )
    return ok(ctx.request_id, data)


@router.get("/keys")
async def list_keys(rt: Rt, ctx: Ctx) -> Response:
    """Managed API keys (no secrets)."""
    return ok(ctx.request_id, await keys.list_keys(rt.db))


@router.post("/keys", dependencies=[Depends(audited("key.create", "api_key"))])
async def create_key(
    request: Request,
    rt: Rt,
    ctx: Ctx,
    body: Annotated[CreateKeyBody, Depends(json_body(CreateKeyBody))],
) -> Response:
    """Create a key; the secret is in this response only. When this key is the one that
    turns authentication on, ``warnings`` says so (every caller needs a credential from now
    on, running workers included)."""
    authenticator: Authenticator = request.app.state.authenticator
    turns_auth_on = not await authenticator.enforced() and not rt.settings.auth_disabled
    if turns_auth_on and body.role.strip().lower() != "admin":
        # The first credential turns authentication on for everyone: make sure somebody can
        # still administer the server afterwards.
        raise InvalidArgument(
            "the first credential must be an admin key: creating it turns authentication on "
            "for every caller"
        )
    created = await keys.create_key(
        rt.db,
        ctx,
        role=body.role,
        key_id=body.key_id,
        worker_id_prefix=body.worker_id_prefix,
        description=body.description,
    )
    authenticator.key_created()
    if turns_auth_on:
        created["warnings"] = [AUTH_TURNED_ON_WARNING]
    return ok(ctx.request_id, created)


@router.post(
    "/keys/{key_id}/disable", dependencies=[Depends(audited("key.disable", "api_key", "key_id"))]
)
async def disable_key(request: Request, rt: Rt, ctx: Ctx, key_id: str) -> Response:
    """Disable a key."""
    data = await keys.disable_key(rt.db, ctx, key_id)
    request.app.state.authenticator.keys_changed()
    return ok(ctx.request_id, data)


@router.post(
    "/keys/{key_id}/rotate", dependencies=[Depends(audited("key.rotate", "api_key", "key_id"))]
)
async def rotate_key(
    request: Request,
    rt: Rt,
    ctx: Ctx,
    key_id: str,
    body: Annotated[RotateKeyBody, Depends(json_body(RotateKeyBody))],
) -> Response:
    """Issue a new secret for a key. A disabled key answers 409 unless the body says
    ``{"reactivate": true}``."""
    data = await keys.rotate_key(rt.db, ctx, key_id, reactivate=body.reactivate)
    request.app.state.authenticator.keys_changed()
    return ok(ctx.request_id, data)


@router.get("/incidents")
async def list_incidents(rt: Rt, ctx: Ctx) -> Response:
    """Recent incidents and the open one, if any."""
    data = await incidents.recent(rt.db)
    data["current"] = await incidents.current(rt.db)
    return ok(ctx.request_id, data)


@router.post("/incidents", dependencies=[Depends(audited("incident.open", "incident"))])
async def open_incident(
    rt: Rt, ctx: Ctx, body: Annotated[OpenIncidentBody, Depends(json_body(OpenIncidentBody))]
) -> Response:
    """Open an incident: replays, DLQ replays and resumes need an override until it closes."""
    return ok(ctx.request_id, await incidents.open_incident(rt.db, ctx, body.reason))


@router.post("/incidents/close", dependencies=[Depends(audited("incident.close", "incident"))])
async def close_incident(
    rt: Rt, ctx: Ctx, body: Annotated[CloseIncidentBody, Depends(json_body(CloseIncidentBody))]
) -> Response:
    """Close the open incident."""
    return ok(ctx.request_id, await incidents.close_incident(rt.db, ctx, body.reason))


@router.get("/workers")
async def list_workers(rt: Rt, ctx: Ctx, window_seconds: float = 300.0) -> Response:
    """Workers that polled recently and the leases they hold."""
    if not 0 < window_seconds <= 86_400:
        raise InvalidArgument("window_seconds must be between 0 and 86400")
    return ok(ctx.request_id, await health.recent_workers(rt, window_seconds))


@router.get("/metrics/history")
async def metrics_history(rt: Rt, ctx: Ctx) -> Response:
    """This process's recent counter increases and gauge ranges, slot by slot.

    What ``oris triage`` judges the alert rules' windows over: an increase over the last ten
    minutes is known here however late triage starts, without a Prometheus server."""
    return ok(ctx.request_id, rt.metrics.history_snapshot())
