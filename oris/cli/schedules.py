"""``oris schedules create|list|inspect|pause|resume|trigger|delete`` over the HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oris.cli.operator import (
    JsonObject,
    JsonValue,
    LimitOption,
    api_command,
    render_record,
    unbox,
)
from oris.cli.output import Column, render_fields, render_table

schedules_app = typer.Typer(help="Recurring runs of a workflow.", no_args_is_help=True)
ScheduleIdArgument = Annotated[str, typer.Argument(help="The schedule's id.", show_default=False)]

SCHEDULE_COLUMNS = (
    Column("schedule_id", "schedule_id"),
    Column("status", "status", coloured=True),
    Column("workflow", "workflow"),
    Column("when", lambda row: row.get("cron") or f"every {row.get('every_seconds')}s"),
    Column("timezone", "timezone"),
    Column("next_run_at", "next_run_at"),
    Column("last_thread_id", "last_thread_id"),
)
SCHEDULE_FIELDS = (
    "schedule_id",
    "status",
    "workflow",
    "cron",
    "every_seconds",
    "timezone",
    "overlap",
    "catch_up",
    "priority",
    "tenant_id",
    "next_run_at",
    "last_run_at",
    "last_thread_id",
    "input",
    "retry_policy",
    "created_at",
    "updated_at",
)

if TYPE_CHECKING:
    from oris.client.http import OrisClient


class OverlapChoice(StrEnum):
    """What a tick does while the previous run is unfinished."""

    SKIP = "skip"
    ALLOW = "allow"


class CatchUpChoice(StrEnum):
    """What happens to ticks missed while the runtime was down."""

    LATEST = "latest"
    NONE = "none"


def render_schedule(data: Mapping[str, Any]) -> None:
    """Print one schedule."""
    keys = [key for key in SCHEDULE_FIELDS if key in data]
    if "created" in data:
        keys.append("created")
    render_fields(data, keys)


def render_schedule_list(data: Mapping[str, Any]) -> None:
    """Print a page of schedules."""
    rows = data.get("schedules") or []
    render_table(rows, SCHEDULE_COLUMNS, empty="(no schedules)")
    if rows:
        offset = int(data.get("offset") or 0)
        print(f"\n{offset + 1}-{offset + len(rows)} of {data.get('total')} schedules")


def render_trigger(data: Mapping[str, Any]) -> None:
    """Print the job a trigger queued."""
    render_record(data.get("job") or {})


@api_command(schedules_app, "create", render=render_schedule)
async def schedules_create(
    client: OrisClient,
    schedule_id: ScheduleIdArgument,
    workflow: Annotated[str, typer.Option("--workflow", help="Workflow each tick runs.")],
    cron: Annotated[
        str | None,
        typer.Option("--cron", help="Five-field cron expression or @hourly-style macro."),
    ] = None,
    every_seconds: Annotated[
        int | None, typer.Option("--every-seconds", help="Tick every this many seconds (>= 1).")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", help="IANA zone the cron is read in.", show_default="UTC"),
    ] = None,
    input_json: Annotated[
        JsonValue | None,
        typer.Option(
            "--input", parser=JsonValue.parse, metavar="JSON", help="Each job's input (any JSON)."
        ),
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="0..100.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id.")] = None,
    retry_policy: Annotated[
        JsonObject | None,
        typer.Option(
            "--retry-policy", parser=JsonObject.parse, metavar="JSON", help="Each job's retries."
        ),
    ] = None,
    overlap: Annotated[
        OverlapChoice | None,
        typer.Option(
            "--overlap", help="While the previous run is unfinished.", show_default="skip"
        ),
    ] = None,
    catch_up: Annotated[
        CatchUpChoice | None,
        typer.Option("--catch-up", help="Ticks missed while down.", show_default="latest"),
    ] = None,
) -> Any:
    """Define a schedule (the same definition again changes nothing)."""
    if (cron is None) == (every_seconds is None):
        raise typer.BadParameter("give exactly one of --cron and --every-seconds")
    return await client.create_schedule(
        schedule_id,
        workflow,
        cron=cron,
        every_seconds=every_seconds,
        timezone=timezone,
        input=unbox(input_json),
        priority=priority,
        tenant_id=tenant,
        retry_policy=unbox(retry_policy),
        overlap=None if overlap is None else overlap.value,
        catch_up=None if catch_up is None else catch_up.value,
    )


@api_command(schedules_app, "list", render=render_schedule_list)
async def schedules_list(
    client: OrisClient,
    limit: LimitOption = None,
    offset: Annotated[int | None, typer.Option("--offset", help="Skip this many rows.")] = None,
) -> Any:
    """List schedules by id."""
    return await client.list_schedules(limit, offset)


@api_command(schedules_app, "inspect", render=render_schedule)
async def schedules_inspect(client: OrisClient, schedule_id: ScheduleIdArgument) -> Any:
    """Show a schedule: definition, status, next and last run."""
    return await client.get_schedule(schedule_id)


@api_command(schedules_app, "pause", render=render_schedule)
async def schedules_pause(client: OrisClient, schedule_id: ScheduleIdArgument) -> Any:
    """Stop ticking; ticks meanwhile are counted as skipped, never run later."""
    return await client.schedule_action(schedule_id, "pause")


@api_command(schedules_app, "resume", render=render_schedule)
async def schedules_resume(client: OrisClient, schedule_id: ScheduleIdArgument) -> Any:
    """Tick again, from the next tick after now."""
    return await client.schedule_action(schedule_id, "resume")


@api_command(schedules_app, "trigger", render=render_trigger)
async def schedules_trigger(client: OrisClient, schedule_id: ScheduleIdArgument) -> Any:
    """Queue one run now, outside the calendar."""
    return await client.schedule_action(schedule_id, "trigger")


@api_command(schedules_app, "delete", render=render_record)
async def schedules_delete(client: OrisClient, schedule_id: ScheduleIdArgument) -> Any:
    """Delete a schedule; the jobs it queued stay."""
    return await client.delete_schedule(schedule_id)
