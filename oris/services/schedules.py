"""Schedules: define, read, pause, resume, trigger and delete them, and tick them.

Every API replica ticks every schedule from its maintenance loop. A tick is handled in one
transaction that moves the schedule's ``next_run_at`` on with a compare-and-set (and, on
PostgreSQL, holds the row with ``FOR UPDATE SKIP LOCKED``), and the tick's job has a thread id
derived from the tick time (a primary key): however many replicas sweep at once, one tick
queues at most one job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oris.domain.calendar import Calendar, CatchUp, Overlap
from oris.domain.clock import now_ms, optional_rfc3339, to_rfc3339
from oris.domain.errors import Conflict, InvalidArgument, NotFound
from oris.domain.states import ACTIVE_JOB_STATUSES, JobStatus
from oris.domain.validation import (
    check_offset,
    check_priority,
    check_workflow,
    clamp_limit,
    optional_id,
    require_id,
)
from oris.services import audit, events
from oris.services.context import RequestContext
from oris.services.jobs import RunCommand, parse_retry_policy, start_new_in, validate_run
from oris.services.runtime import Runtime
from oris.services.transactions import retried
from oris.store import jobs as job_store
from oris.store import schedules as schedule_store
from oris.store.database import Database, after_commit
from oris.store.records import ScheduleRecord, dump_json

log = logging.getLogger("oris.schedules")

SCHEDULE_ID_MAX_LENGTH = 96  # a tick's thread id appends ":YYYYmmddTHHMMSSZ"
ACTIVE = "active"
PAUSED = "paused"
TICK_BATCH = 100
MAX_TICKS_PER_PASS = 100
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200
OUTCOMES = ("queued", "skipped_overlap", "skipped_paused", "missed")
_ACTIVE_STATUSES = {status.value for status in ACTIVE_JOB_STATUSES}


@dataclass(frozen=True, slots=True)
class ScheduleCommand:
    """A ``POST /v1/schedules`` body, before validation."""

    schedule_id: str | None
    workflow: str | None
    input: Any = None
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str | None = None
    tenant_id: str | None = None
    priority: int | None = None
    retry_policy: dict[str, Any] | None = None
    overlap: str | None = None
    catch_up: str | None = None


@dataclass(frozen=True, slots=True)
class ValidSchedule:
    """A schedule definition that passed every check."""

    schedule_id: str
    workflow: str
    input: Any
    calendar: Calendar
    tenant_id: str | None
    priority: int
    retry_policy: dict[str, Any] | None
    overlap: Overlap
    catch_up: CatchUp

    def definition(self) -> dict[str, Any]:
        """The fields that define the schedule, as stored and compared on a repeat."""
        return {
            "schedule_id": self.schedule_id,
            "workflow": self.workflow,
            "input": self.input,
            "cron": self.calendar.cron,
            "every_seconds": self.calendar.every_seconds,
            "timezone": self.calendar.timezone,
            "tenant_id": self.tenant_id,
            "priority": self.priority,
            "retry_policy": self.retry_policy,
            "overlap": self.overlap.value,
            "catch_up": self.catch_up.value,
        }

    def definition_hash(self) -> str:
        """Fingerprint of :meth:`definition`."""
        return hashlib.sha256(dump_json(self.definition()).encode()).hexdigest()


def _choice(field: str, value: str | None, kind: type[Overlap] | type[CatchUp]) -> Any:
    if value is None:
        return next(iter(kind))
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be one of: " + "|".join(item.value for item in kind)
        ) from None


def validate(command: ScheduleCommand) -> ValidSchedule:
    """Every check of a schedule definition, before anything is read or written."""
    schedule_id = require_id("schedule_id", command.schedule_id)
    if len(schedule_id) > SCHEDULE_ID_MAX_LENGTH:
        raise InvalidArgument(f"schedule_id must be {SCHEDULE_ID_MAX_LENGTH} characters or fewer")
    # A reserved name would pass here and be refused at every tick: refuse it now.
    workflow = check_workflow(require_id("workflow", command.workflow))
    calendar = Calendar.parse(command.cron, command.every_seconds, command.timezone)
    policy = parse_retry_policy(command.retry_policy)
    return ValidSchedule(
        schedule_id=schedule_id,
        workflow=workflow,
        input=command.input,
        calendar=calendar,
        tenant_id=optional_id("tenant_id", command.tenant_id),
        priority=check_priority(command.priority),
        retry_policy=None if policy is None else policy.to_json(),
        overlap=_choice("overlap", command.overlap, Overlap),
        catch_up=_choice("catch_up", command.catch_up, CatchUp),
    )


def schedule_view(record: ScheduleRecord) -> dict[str, Any]:
    """A schedule as the API shows it."""
    return {
        "schedule_id": record.schedule_id,
        "workflow": record.workflow,
        "input": record.input,
        "cron": record.cron,
        "every_seconds": record.every_seconds,
        "timezone": record.timezone,
        "tenant_id": record.tenant_id,
        "priority": record.priority,
        "retry_policy": record.retry_policy,
        "overlap": record.overlap,
        "catch_up": record.catch_up,
        "status": record.status,
        "next_run_at": to_rfc3339(record.next_run_at_ms),
        "last_run_at": optional_rfc3339(record.last_run_at_ms),
        "last_thread_id": record.last_thread_id,
        "created_at": to_rfc3339(record.created_at_ms),
        "updated_at": to_rfc3339(record.updated_at_ms),
    }


async def create(db: Database, ctx: RequestContext, command: ScheduleCommand) -> dict[str, Any]:
    """Define a schedule; the same definition again is a no-op, a different one a 409."""
    valid = validate(command)
    digest = valid.definition_hash()
    async with db.write() as conn:
        now = now_ms()
        calendar = valid.calendar
        inserted = await schedule_store.insert(
            conn,
            {
                "schedule_id": valid.schedule_id,
                "workflow": valid.workflow,
                "input_json": dump_json(valid.input),
                "cron": calendar.cron,
                "every_seconds": calendar.every_seconds,
                "timezone": calendar.timezone,
                "tenant_id": valid.tenant_id,
                "priority": valid.priority,
                "retry_policy_json": None
                if valid.retry_policy is None
                else dump_json(valid.retry_policy),
                "overlap": valid.overlap.value,
                "catch_up": valid.catch_up.value,
                "definition_hash": digest,
                "status": ACTIVE,
                "next_run_at_ms": calendar.next_after(now),
                "last_run_at_ms": None,
                "last_thread_id": None,
                "created_at_ms": now,
                "updated_at_ms": now,
            },
        )
        record = await schedule_store.get(conn, valid.schedule_id)
        assert record is not None  # nothing deletes it inside this transaction's lock
        if not inserted:
            if record.definition_hash != digest:
                raise Conflict(
                    f"schedule '{valid.schedule_id}' exists with a different definition",
                    {"schedule_id": valid.schedule_id},
                )
            return {**schedule_view(record), "created": False}
        await audit.write(
            conn,
            ctx,
            action="schedule.create",
            resource_type="schedule",
            resource_id=valid.schedule_id,
            details={
                "workflow": valid.workflow,
                "cron": calendar.cron,
                "every_seconds": calendar.every_seconds,
                "timezone": calendar.timezone,
            },
        )
    return {**schedule_view(record), "created": True}


async def _require(
    conn: AsyncConnection, schedule_id: str, *, lock: bool = False
) -> ScheduleRecord:
    record = await schedule_store.get(conn, require_id("schedule_id", schedule_id), lock=lock)
    if record is None:
        raise NotFound(f"schedule not found: {schedule_id}", {"schedule_id": schedule_id})
    return record


async def get(db: Database, schedule_id: str) -> dict[str, Any]:
    """One schedule with its status and next tick."""
    async with db.read() as conn:
        return schedule_view(await _require(conn, schedule_id))


async def list_schedules(db: Database, *, limit: int | None, offset: int | None) -> dict[str, Any]:
    """A page of schedules by id."""
    resolved_limit = clamp_limit(limit, default=LIST_DEFAULT_LIMIT, maximum=LIST_MAX_LIMIT)
    resolved_offset = check_offset(offset)
    async with db.read() as conn:
        rows, total = await schedule_store.list_page(
            conn, limit=resolved_limit, offset=resolved_offset
        )
    return {
        "schedules": [schedule_view(row) for row in rows],
        "total": total,
        "limit": resolved_limit,
        "offset": resolved_offset,
    }


async def set_paused(
    db: Database, ctx: RequestContext, schedule_id: str, *, paused: bool
) -> dict[str, Any]:
    """Pause (ticks are skipped and counted) or resume (from the next tick after now)."""
    async with db.write() as conn:
        record = await _require(conn, schedule_id, lock=True)
        now = now_ms()
        wanted = PAUSED if paused else ACTIVE
        values: dict[str, Any] = {"status": wanted, "updated_at_ms": now}
        if not paused and record.status != ACTIVE:
            # Ticks that fell while paused were counted as skipped; none is run late.
            calendar = Calendar(record.cron, record.every_seconds, record.timezone)
            values["next_run_at_ms"] = calendar.next_after(now)
        changed = record.status != wanted
        if changed:
            await schedule_store.update_schedule(conn, record.schedule_id, values)
        await audit.write(
            conn,
            ctx,
            action="schedule.pause" if paused else "schedule.resume",
            resource_type="schedule",
            resource_id=record.schedule_id,
            details={"previous_status": record.status, "changed": changed},
        )
        updated = await _require(conn, record.schedule_id)
    return schedule_view(updated)


async def delete(db: Database, ctx: RequestContext, schedule_id: str) -> dict[str, Any]:
    """Remove a schedule; the jobs it queued stay."""
    async with db.write() as conn:
        record = await _require(conn, schedule_id, lock=True)
        await schedule_store.remove(conn, record.schedule_id)
        await audit.write(
            conn,
            ctx,
            action="schedule.delete",
            resource_type="schedule",
            resource_id=record.schedule_id,
            details={"workflow": record.workflow},
        )
    return {"schedule_id": record.schedule_id, "deleted": True}


def tick_thread_id(schedule_id: str, tick_ms: int) -> str:
    """The thread id of a tick's job: the schedule id and the tick time, to the second."""
    moment = datetime.fromtimestamp(tick_ms / 1000, tz=UTC)
    return f"{schedule_id}:{moment.strftime('%Y%m%dT%H%M%SZ')}"


def _run_of(record: ScheduleRecord, thread_id: str, now: int) -> Any:
    valid = validate_run(
        RunCommand(
            thread_id=thread_id,
            input=record.input,
            priority=record.priority,
            tenant_id=record.tenant_id,
            workflow=record.workflow,
            retry_policy=record.retry_policy,
        ),
        None,
        now,
    )
    return dataclasses.replace(valid, schedule_id=record.schedule_id)


async def trigger(rt: Runtime, ctx: RequestContext, schedule_id: str) -> dict[str, Any]:
    """Queue one run now, outside the calendar (also while paused; overlap does not apply)."""
    async with rt.db.write() as conn:
        record = await _require(conn, schedule_id, lock=True)
        now = now_ms()
        thread_id = f"{record.schedule_id}:trigger-{now}-{uuid.uuid4().hex[:8]}"
        response = await start_new_in(rt.db, conn, ctx, _run_of(record, thread_id, now), now)
        assert response is not None  # a fresh id
        await schedule_store.update_schedule(
            conn,
            record.schedule_id,
            {"last_run_at_ms": now, "last_thread_id": thread_id, "updated_at_ms": now},
        )
        await audit.write(
            conn,
            ctx,
            action="schedule.trigger",
            resource_type="schedule",
            resource_id=record.schedule_id,
            details={"thread_id": thread_id},
        )
    return {"schedule_id": record.schedule_id, "job": response}


@dataclass(slots=True)
class TickReport:
    """What one pass over the due schedules did, by outcome, and each queued job's lag."""

    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    lags_ms: list[float] = dataclasses.field(default_factory=list)

    def add(self, outcome: str, count: int = 1) -> None:
        """Count ``count`` ticks with ``outcome``."""
        self.counts[outcome] += count


@retried
async def tick(rt: Runtime) -> TickReport:
    """Handle every due tick of every schedule once; safe to run in several replicas at once."""
    report = TickReport()
    async with rt.db.write() as conn:
        now = now_ms()
        due = await schedule_store.claim_due(conn, now_ms=now, limit=TICK_BATCH)
        for record in due:
            await _tick_one(rt, conn, record, now, report)
        after_commit(conn, lambda: _count(rt, report))
    return report


def _count(rt: Runtime, report: TickReport) -> None:
    for outcome, count in report.counts.items():
        if count:
            rt.metrics.schedule_ticks(outcome, count)
    for lag in report.lags_ms:
        rt.metrics.schedule_lag(lag)


async def _tick_one(
    rt: Runtime, conn: AsyncConnection, record: ScheduleRecord, now: int, report: TickReport
) -> None:
    calendar = Calendar(record.cron, record.every_seconds, record.timezone)
    ticks, total = calendar.ticks_between(record.next_run_at_ms, now, MAX_TICKS_PER_PASS)
    values: dict[str, Any] = {"next_run_at_ms": calendar.next_after(now), "updated_at_ms": now}
    advanced = await schedule_store.advance(
        conn,
        record.schedule_id,
        expected_next_run_at_ms=record.next_run_at_ms,
        expected_status=record.status,
        values=values,
    )
    if not advanced:
        return  # another replica handled these ticks first
    if record.status != ACTIVE:
        report.add("skipped_paused", total)
        return
    grace_ms = int(rt.settings.schedule_misfire_grace_seconds * 1000)
    on_time = [t for t in ticks if now - t <= grace_ms]
    late = [t for t in ticks if now - t > grace_ms]
    missed = total - len(on_time)
    run: list[tuple[int, bool]] = []
    if late and record.catch_up == CatchUp.LATEST.value:
        run.append((late[-1], True))  # the most recent missed tick runs once
        missed -= 1
    run += [(t, False) for t in on_time]
    report.add("missed", missed)
    if missed:
        log.warning(
            "schedule ticks missed",
            extra={
                "schedule_id": record.schedule_id,
                "missed": missed,
                "catch_up": record.catch_up,
            },
        )
    last_thread = record.last_thread_id
    last_run = record.last_run_at_ms
    for tick_ms, catching_up in run:
        if record.overlap == Overlap.SKIP.value and await _unfinished(conn, last_thread):
            report.add("skipped_overlap")
            continue
        thread_id = tick_thread_id(record.schedule_id, tick_ms)
        ctx = RequestContext.internal(f"schedule-{record.schedule_id}")
        valid = _run_of(record, thread_id, now)
        response = await start_new_in(rt.db, conn, ctx, valid, now)
        if response is None:
            continue  # queued before (a tick handled by an earlier pass)
        await events.record(
            conn,
            thread_id=thread_id,
            event_type="schedule_tick",
            attempt_id=response["attempt_id"],
            details={
                "schedule_id": record.schedule_id,
                "tick_at": to_rfc3339(tick_ms),
                "catch_up": catching_up,
            },
            now_ms=now,
        )
        report.add("queued")
        report.lags_ms.append(float(max(now - tick_ms, 0)))
        last_thread, last_run = thread_id, tick_ms
    if last_thread != record.last_thread_id:
        await schedule_store.update_schedule(
            conn, record.schedule_id, {"last_thread_id": last_thread, "last_run_at_ms": last_run}
        )


async def _unfinished(conn: AsyncConnection, thread_id: str | None) -> bool:
    """Whether the schedule's previous run has not finished yet."""
    if thread_id is None:
        return False
    job = await job_store.get_job(conn, thread_id)
    return job is not None and job.status in _ACTIVE_STATUSES and job.status != JobStatus.CANCELLED
