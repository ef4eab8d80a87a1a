"""Operator commands over the HTTP API: ``oris jobs|interrupts|dlq|audit logs|keys`` and
``oris smoke``.

Every command talks to the API through :class:`OrisClient` only. Exit codes: 0 ok, 1 the server
refused or failed, 2 usage error, 3 server unreachable.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, fail
from oris.cli.output import (
    Column,
    describe_api_error,
    heading,
    print_json,
    render_fields,
    render_table,
    status_colour,
)
from oris.domain.states import InterruptStatus, JobStatus, ReplayStatus
from oris.domain.validation import TimeoutStatus

if TYPE_CHECKING:
    # The HTTP client and the settings model (httpx, pydantic) are imported when a command
    # runs, not when the CLI is built: ``oris --help`` and argument errors never load them.
    from oris.client.http import ApiError, OrisClient
    from oris.config import ClientSettings

T = TypeVar("T")
Handler = Callable[..., Awaitable[Any]]
CONNECTION_PANEL = "Connection"
SHOWN_ONCE_NOTICE = "Store this secret now: it will not be shown again."


class JobOrder(StrEnum):
    """The orders ``oris jobs list`` can page in."""

    UPDATED = "updated"
    CREATED = "created"


class KeyRole(StrEnum):
    """Roles an API key can carry (the server's role matrix decides what each may call)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    WORKER = "worker"


# --- JSON arguments ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonValue:
    """A JSON value given on the command line (boxed so that ``null`` is a real value)."""

    value: Any

    @classmethod
    def parse(cls, text: str) -> JsonValue:
        """Parse ``text`` as JSON, or raise a usage error that says how to quote strings."""
        try:
            return cls(json.loads(text))
        except ValueError as error:
            raise typer.BadParameter(
                f"not valid JSON ({error}); quote JSON strings, e.g. '\"approved\"'"
            ) from None


@dataclass(frozen=True, slots=True)
class JsonObject:
    """A JSON object given on the command line."""

    value: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> JsonObject:
        """Parse ``text`` as a JSON object, or raise a usage error."""
        parsed = JsonValue.parse(text).value
        if not isinstance(parsed, dict):
            raise typer.BadParameter(f"must be a JSON object, got {type(parsed).__name__}")
        return cls(parsed)


def unbox(value: JsonValue | JsonObject | None) -> Any:
    """The parsed JSON of an optional JSON argument (``None`` when the option was omitted)."""
    return None if value is None else value.value


# --- connection options shared by every command -----------------------------------------------

ServerUrlOption = Annotated[
    str | None,
    typer.Option(
        "--server-url",
        envvar="ORIS_SERVER_URL",
        help="Base URL of the Oris API.",
        show_default="http://127.0.0.1:8080",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ApiTokenOption = Annotated[
    str | None,
    typer.Option(
        "--api-token",
        envvar="ORIS_API_TOKEN",
        help="Bearer token (takes precedence over an API key).",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ApiKeyIdOption = Annotated[
    str | None,
    typer.Option(
        "--api-key-id",
        envvar="ORIS_API_KEY_ID",
        help="Id of a managed API key.",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="ORIS_API_KEY",
        help="Secret of the API key.",
        show_default=False,
        rich_help_panel=CONNECTION_PANEL,
    ),
]
RequestTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--request-timeout-seconds",
        envvar="ORIS_REQUEST_TIMEOUT_SECONDS",
        help="Give up on one HTTP request after this many seconds.",
        show_default="30",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the response's raw `data` JSON instead of a table."),
]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
CONNECTION_PARAMETERS = (
    inspect.Parameter("server_url", _KEYWORD, default=None, annotation=ServerUrlOption),
    inspect.Parameter("api_token", _KEYWORD, default=None, annotation=ApiTokenOption),
    inspect.Parameter("api_key_id", _KEYWORD, default=None, annotation=ApiKeyIdOption),
    inspect.Parameter("api_key", _KEYWORD, default=None, annotation=ApiKeyOption),
    inspect.Parameter(
        "request_timeout_seconds", _KEYWORD, default=None, annotation=RequestTimeoutOption
    ),
)
JSON_PARAMETER = inspect.Parameter("json_output", _KEYWORD, default=False, annotation=JsonOption)


def client_settings(
    *,
    server_url: str | None = None,
    api_token: str | None = None,
    api_key_id: str | None = None,
    api_key: str | None = None,
    request_timeout_seconds: float | None = None,
) -> ClientSettings:
    """Client settings from the connection options (unset ones fall back to ``ORIS_*``)."""
    from pydantic import ValidationError

    from oris.config import ClientSettings, describe_validation_error

    given: dict[str, Any] = {
        "server_url": server_url,
        "api_token": api_token,
        "api_key_id": api_key_id,
        "api_key": api_key,
        "request_timeout_seconds": request_timeout_seconds,
    }
    try:
        return ClientSettings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as error:
        fail(describe_validation_error(error), EXIT_USAGE)


def report_api_error(error: ApiError, prefix: str = "") -> None:
    """Print a refusal as ``oris: <message> (status, code, request_id)`` plus its details."""
    print(f"oris: {prefix}{describe_api_error(error)}", file=sys.stderr)
    if error.details:
        details = json.dumps(error.details, ensure_ascii=False, separators=(",", ":"))
        print(f"oris:   details: {details}", file=sys.stderr)


def call_api(settings: ClientSettings, action: Callable[[OrisClient], Awaitable[T]]) -> T:
    """Run ``action`` with a client; map refusals to exit 1 and an absent server to exit 3."""
    import httpx

    from oris.client.http import ApiError, OrisClient, ServerUnreachable

    async def with_client() -> T:
        async with OrisClient(settings) as client:
            return await action(client)

    try:
        return asyncio.run(with_client())
    except ApiError as error:
        report_api_error(error)
        raise typer.Exit(EXIT_FAILURE) from None
    except ServerUnreachable as error:
        fail(f"server unreachable: {error}", EXIT_UNREACHABLE)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        fail(f"invalid server URL {settings.server_url!r}: {error}", EXIT_USAGE)
    except httpx.TransportError as error:
        # Transport failures the client does not classify (write timeout, proxy) still mean
        # the API could not be reached.
        fail(
            f"server unreachable: {settings.server_url}: {type(error).__name__}: {error}",
            EXIT_UNREACHABLE,
        )


def print_warnings(data: Any) -> None:
    """Print the ``warnings`` a response carries to stderr (whatever the output format)."""
    warnings = data.get("warnings") if isinstance(data, Mapping) else None
    if isinstance(warnings, list):
        for warning in warnings:
            print(f"oris: warning: {warning}", file=sys.stderr)


def api_command(
    group: typer.Typer,
    name: str,
    *,
    render: Callable[[Any], None],
    json_notice: Callable[[Any], str | None] | None = None,
    exit_code: Callable[[Any], int] | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``async def handler(client, ...) -> data`` as a command with connection options."""
    # The command's signature is the handler's (minus ``client``) plus the shared connection
    # options and ``--json``; Typer builds the CLI from that signature.

    def decorate(handler: Handler) -> Handler:
        # ``client`` is the only annotation naming a type that is not imported at module level.
        signature = inspect.signature(handler, eval_str=True, locals={"OrisClient": Any})
        own = [p for p in signature.parameters.values() if p.name != "client"]
        connection_names = [p.name for p in CONNECTION_PARAMETERS]

        @functools.wraps(handler)
        def command(**arguments: Any) -> None:
            connection = {key: arguments.pop(key) for key in connection_names}
            as_json = bool(arguments.pop(JSON_PARAMETER.name))
            settings = client_settings(**connection)
            data = call_api(settings, lambda client: handler(client, **arguments))
            print_warnings(data)
            if as_json:
                print_json(data)
                notice = None if json_notice is None else json_notice(data)
                if notice:
                    print(f"oris: {notice}", file=sys.stderr)
            else:
                render(data)
            code = 0 if exit_code is None else exit_code(data)
            if code:
                raise typer.Exit(code)

        parameters = [*own, *CONNECTION_PARAMETERS, JSON_PARAMETER]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        # Typer reads the type hints too: give it the evaluated ones, without ``client``.
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        group.command(name)(command)
        return handler

    return decorate


# --- jobs -----------------------------------------------------------------------------------

jobs_app = typer.Typer(help="Run, inspect and steer jobs.", no_args_is_help=True)
ThreadIdArgument = Annotated[str, typer.Argument(help="The job's thread id.", show_default=False)]
ResumeValueOption = Annotated[
    JsonValue,
    typer.Option(
        "--value",
        parser=JsonValue.parse,
        metavar="JSON",
        help="Resume value (any JSON: quote strings, e.g. '\"approved\"').",
        show_default=False,
    ),
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (recorded on the job and in the audit log).")
]
LimitOption = Annotated[int | None, typer.Option("--limit", help="At most this many rows.")]
OverrideOption = Annotated[
    str | None,
    typer.Option(
        "--override-reason",
        help="Proceed although an incident is open (the reason is audited).",
    ),
]

FILTER_PANEL = "Filters"
WorkflowFilter = Annotated[
    str | None,
    typer.Option("--workflow", help="Only this workflow.", rich_help_panel=FILTER_PANEL),
]
TenantFilter = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant.", rich_help_panel=FILTER_PANEL)
]
CreatedAfterFilter = Annotated[
    str | None,
    typer.Option(
        "--created-after",
        metavar="TIME",
        help="Only created after TIME: RFC 3339 (2026-01-31T12:00:00Z) or epoch milliseconds.",
        rich_help_panel=FILTER_PANEL,
    ),
]
CreatedBeforeFilter = Annotated[
    str | None,
    typer.Option(
        "--created-before",
        metavar="TIME",
        help="Only created before TIME: RFC 3339 or epoch milliseconds.",
        rich_help_panel=FILTER_PANEL,
    ),
]
# The DLQ's time filters use the same options, read as the time the entry was dead-lettered.
DeadAfterFilter = Annotated[
    str | None,
    typer.Option(
        "--created-after",
        metavar="TIME",
        help="Only dead-lettered after TIME: RFC 3339 or epoch milliseconds.",
        rich_help_panel=FILTER_PANEL,
    ),
]
DeadBeforeFilter = Annotated[
    str | None,
    typer.Option(
        "--created-before",
        metavar="TIME",
        help="Only dead-lettered before TIME.",
        rich_help_panel=FILTER_PANEL,
    ),
]
ThreadIdsFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--thread-id", help="Only this thread (repeatable).", rich_help_panel=FILTER_PANEL
    ),
]
CursorOption = Annotated[
    str | None,
    typer.Option("--cursor", help="The next page: the cursor the previous page printed."),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Only show what would be affected; change nothing."),
]
BulkLimitOption = Annotated[
    int | None,
    typer.Option("--limit", help="Act on at most this many.", show_default="1000, max 10000"),
]

JOB_COLUMNS = (
    Column("thread_id", "thread_id"),
    Column("status", "status", coloured=True),
    Column("workflow", "workflow"),
    Column("run", "run_no"),
    Column("tenant", "tenant_id"),
    Column("priority", "priority"),
    Column("updated_at", "updated_at"),
)
JOB_STATE_FIELDS = (
    "thread_id",
    "status",
    "workflow",
    "run_no",
    "tenant_id",
    "priority",
    "created_at",
    "updated_at",
    "checkpoint_id",
    "input",
    "output",
    "error",
    "values",
)
ATTEMPT_COLUMNS = (
    Column("attempt_id", "attempt_id"),
    Column("no", "attempt_no"),
    Column("run", "run_no"),
    Column("kind", "kind"),
    Column("status", "status", coloured=True),
    Column("lease_holder", "lease_holder"),
    Column("leases", lambda row: len(row.get("leases") or [])),
    Column("created_at", "created_at"),
    Column("finished_at", "finished_at"),
    Column("error", "error", max_width=50),
)
TIMELINE_COLUMNS = (
    Column("seq", "seq"),
    Column("created_at", "created_at"),
    Column("event", "event_type"),
    Column("attempt_id", "attempt_id"),
    Column("details", "details", max_width=70),
)


def render_record(data: Mapping[str, Any]) -> None:
    """Print a single response object as ``name  value`` lines."""
    render_fields(data, [key for key in data if key not in {"trace", "interrupts"}])


def render_job_list(data: Mapping[str, Any]) -> None:
    """Print a page of jobs and where the page sits in the total."""
    jobs = data.get("jobs") or []
    render_table(jobs, JOB_COLUMNS, empty="(no jobs)")
    offset = int(data.get("offset") or 0)
    if jobs and data.get("total") is not None:
        print(f"\n{offset + 1}-{offset + len(jobs)} of {data.get('total')} jobs")
    render_next_cursor(data)


def render_next_cursor(data: Mapping[str, Any]) -> None:
    """How to fetch the next page, when there is one."""
    if data.get("next_cursor"):
        print(f"\nnext page: --cursor {data['next_cursor']}")


def render_bulk(data: Mapping[str, Any], noun: str, key: str, verb: str) -> None:
    """Print a bulk action's ids and outcome (or, for a dry run, what it would do)."""
    ids = data.get(key) or []
    failed = data.get("failed") or []
    render_table(
        [{"id": item} for item in ids], (Column(key.removesuffix("s"), "id"),), empty=f"(no {noun})"
    )
    if failed:
        heading("Refused")
        render_table(
            failed,
            (
                Column(key.removesuffix("s"), key.removesuffix("s")),
                Column("code", "code", coloured=True),
                Column("error", "message", max_width=60),
            ),
        )
    more = " (more match: raise --limit or narrow the filters)" if data.get("more") else ""
    if data.get("dry_run"):
        print(f"\ndry run: {data['count']} {noun} would be {verb}; nothing changed{more}")
    else:
        print(f"\n{data['count']} {noun} {verb}, {len(failed)} refused{more}")


def bulk_exit_code(data: Mapping[str, Any]) -> int:
    """Exit 1 when any item of a bulk action (or of a list of replays) was refused."""
    return EXIT_FAILURE if data.get("failed") else 0


def render_job_state(data: Mapping[str, Any]) -> None:
    """Print a job's state (``inspect``)."""
    render_fields(data, [key for key in JOB_STATE_FIELDS if key in data])


def render_job_detail(data: Mapping[str, Any]) -> None:
    """Print a job's state, attempts, pending interrupt and timeline (``detail``)."""
    summary = [key for key in JOB_STATE_FIELDS if key in data and key != "values"]
    render_fields(data, [*summary, "current_attempt_id", "cancel_reason"])
    heading("Attempts")
    render_table(data.get("attempts") or [], ATTEMPT_COLUMNS, empty="(no attempts)")
    pending = data.get("pending_interrupt")
    if pending:
        heading("Pending interrupt")
        render_fields(pending)
    heading("Timeline")
    render_table(data.get("timeline") or [], TIMELINE_COLUMNS, empty="(no events)")


def render_timeline(data: Mapping[str, Any]) -> None:
    """Print a job's events in order."""
    render_table(data.get("timeline") or [], TIMELINE_COLUMNS, empty="(no events)")


@api_command(jobs_app, "run", render=render_record)
async def jobs_run(
    client: OrisClient,
    thread_id: ThreadIdArgument,
    input_json: Annotated[
        JsonValue | None,
        typer.Option(
            "--input", parser=JsonValue.parse, metavar="JSON", help="Job input (any JSON)."
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", help="Workflow to run.", show_default="echo")
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="0..100; higher is dispatched first.")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="A repeat with the same key replays the answer."),
    ] = None,
    retry_policy: Annotated[
        JsonObject | None,
        typer.Option(
            "--retry-policy",
            parser=JsonObject.parse,
            metavar="JSON",
            help='e.g. \'{"strategy":"fixed","backoff_ms":1000,"max_retries":3}\'.',
        ),
    ] = None,
    timeout_ms: Annotated[
        int | None, typer.Option("--timeout-ms", help="Execution timeout of each attempt.")
    ] = None,
    on_timeout: Annotated[
        TimeoutStatus | None,
        typer.Option(
            "--on-timeout",
            help="Status of a timed-out job (needs --timeout-ms).",
            show_default="failed",
        ),
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option("--run-at", help="Start no earlier than this RFC 3339 time (with offset)."),
    ] = None,
    delay_ms: Annotated[
        int | None, typer.Option("--delay-ms", help="Start no earlier than this many ms from now.")
    ] = None,
) -> Any:
    """Queue a job; it returns at once with status queued (scheduled with a start time)."""
    timeout_policy = None
    if timeout_ms is not None:
        status = on_timeout or TimeoutStatus.FAILED
        timeout_policy = {"timeout_ms": timeout_ms, "on_timeout_status": status.value}
    elif on_timeout is not None:
        raise typer.BadParameter("needs --timeout-ms", param_hint="'--on-timeout'")
    return await client.run_job(
        thread_id,
        unbox(input_json),
        workflow=workflow,
        priority=priority,
        tenant_id=tenant,
        idempotency_key=idempotency_key,
        retry_policy=unbox(retry_policy),
        timeout_policy=timeout_policy,
        run_at=run_at,
        delay_ms=delay_ms,
    )


@api_command(jobs_app, "list", render=render_job_list)
async def jobs_list(
    client: OrisClient,
    status: Annotated[JobStatus | None, typer.Option("--status", help="Only this status.")] = None,
    limit: LimitOption = None,
    offset: Annotated[int | None, typer.Option("--offset", help="Skip this many rows.")] = None,
    workflow: WorkflowFilter = None,
    tenant: TenantFilter = None,
    created_after: CreatedAfterFilter = None,
    created_before: CreatedBeforeFilter = None,
    order: Annotated[
        JobOrder | None,
        typer.Option("--order", help="updated: last change first; created: newest first."),
    ] = None,
    cursor: CursorOption = None,
    schedule_id: Annotated[
        str | None, typer.Option("--schedule-id", help="Only jobs this schedule queued.")
    ] = None,
) -> Any:
    """List jobs, most recently updated (or created) first; page with --cursor."""
    return await client.list_jobs(
        None if status is None else status.value,
        limit,
        offset,
        workflow=workflow,
        tenant_id=tenant,
        created_after=created_after,
        created_before=created_before,
        order=None if order is None else order.value,
        cursor=cursor,
        schedule_id=schedule_id,
    )


@api_command(jobs_app, "inspect", render=render_job_state)
async def jobs_inspect(client: OrisClient, thread_id: ThreadIdArgument) -> Any:
    """Show a job's latest state and true status."""
    return await client.inspect_job(thread_id)


@api_command(jobs_app, "detail", render=render_job_detail)
async def jobs_detail(client: OrisClient, thread_id: ThreadIdArgument) -> Any:
    """Show a job with its attempts, leases, pending interrupt and timeline."""
    return await client.job_detail(thread_id)


def render_cancel(data: Mapping[str, Any]) -> None:
    """One cancelled job, or a bulk cancel's outcome."""
    if "dry_run" in data:
        render_bulk(data, "jobs", "thread_ids", "cancelled")
    else:
        render_record(data)


@api_command(jobs_app, "cancel", render=render_cancel, exit_code=bulk_exit_code)
async def jobs_cancel(
    client: OrisClient,
    thread_id: Annotated[
        str | None,
        typer.Argument(help="The job's thread id (omit it with --where).", show_default=False),
    ] = None,
    reason: ReasonOption = None,
    where: Annotated[
        bool,
        typer.Option(
            "--where", help="Cancel every live job the filter options select, not one job."
        ),
    ] = False,
    workflow: WorkflowFilter = None,
    tenant: TenantFilter = None,
    status: Annotated[
        JobStatus | None,
        typer.Option("--status", help="Only this live status.", rich_help_panel=FILTER_PANEL),
    ] = None,
    created_after: CreatedAfterFilter = None,
    created_before: CreatedBeforeFilter = None,
    thread_ids: ThreadIdsFilter = None,
    limit: BulkLimitOption = None,
    dry_run: DryRunOption = False,
) -> Any:
    """Cancel a job, its queued work and its lease; with --where, every live job selected."""
    filters = {
        "workflow": workflow,
        "tenant_id": tenant,
        "status": None if status is None else status.value,
        "created_after": created_after,
        "created_before": created_before,
        "thread_ids": thread_ids or None,
        "limit": limit,
    }
    if not where:
        if any(value is not None for value in filters.values()) or dry_run:
            raise typer.BadParameter("filter options and --dry-run need --where")
        if thread_id is None:
            raise typer.BadParameter("give a THREAD_ID, or --where with filter options")
        return await client.cancel_job(thread_id, reason)
    if thread_id is not None:
        raise typer.BadParameter("give a THREAD_ID or --where, not both")
    return await client.cancel_jobs(**filters, reason=reason, dry_run=dry_run)


@api_command(jobs_app, "resume", render=render_record)
async def jobs_resume(
    client: OrisClient,
    thread_id: ThreadIdArgument,
    value: ResumeValueOption,
    override_reason: OverrideOption = None,
) -> Any:
    """Resume the job's pending interrupt with a value."""
    extra = {"override_reason": override_reason} if override_reason else {}
    return await client.resume_job(thread_id, value.value, **extra)


@api_command(jobs_app, "replay", render=render_record)
async def jobs_replay(
    client: OrisClient,
    thread_id: ThreadIdArgument,
    checkpoint_id: Annotated[
        str | None,
        typer.Option("--checkpoint-id", help="Replay from this checkpoint.", show_default="latest"),
    ] = None,
    override_reason: OverrideOption = None,
) -> Any:
    """Queue a replay from a checkpoint; a duplicate replay returns the first result."""
    extra = {"override_reason": override_reason} if override_reason else {}
    return await client.replay_job(thread_id, checkpoint_id, **extra)


@api_command(jobs_app, "timeline", render=render_timeline)
async def jobs_timeline(client: OrisClient, thread_id: ThreadIdArgument) -> Any:
    """Show every event of a job in order."""
    return await client.job_timeline(thread_id)


# --- interrupts -------------------------------------------------------------------------------

interrupts_app = typer.Typer(help="Human-approval interrupts.", no_args_is_help=True)
InterruptIdArgument = Annotated[str, typer.Argument(help="Interrupt id.", show_default=False)]
INTERRUPT_COLUMNS = (
    Column("interrupt_id", "interrupt_id"),
    Column("thread_id", "thread_id"),
    Column("status", "status", coloured=True),
    Column("step", "step"),
    Column("created_at", "created_at"),
    Column("value", "value", max_width=50),
)


def render_interrupt_list(data: Mapping[str, Any]) -> None:
    """Print interrupts, newest first."""
    render_table(data.get("interrupts") or [], INTERRUPT_COLUMNS, empty="(no interrupts)")


@api_command(interrupts_app, "list", render=render_interrupt_list)
async def interrupts_list(
    client: OrisClient,
    status: Annotated[
        InterruptStatus | None, typer.Option("--status", help="Only this status.")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this thread.")] = None,
    limit: LimitOption = None,
) -> Any:
    """List interrupts, newest first."""
    return await client.list_interrupts(None if status is None else status.value, run_id, limit)


@api_command(interrupts_app, "show", render=render_record)
async def interrupts_show(client: OrisClient, interrupt_id: InterruptIdArgument) -> Any:
    """Show one interrupt."""
    return await client.get_interrupt(interrupt_id)


@api_command(interrupts_app, "resume", render=render_record)
async def interrupts_resume(
    client: OrisClient,
    interrupt_id: InterruptIdArgument,
    value: ResumeValueOption,
    override_reason: OverrideOption = None,
) -> Any:
    """Resume an interrupt with a value; the job is queued again."""
    extra = {"override_reason": override_reason} if override_reason else {}
    return await client.resume_interrupt(interrupt_id, value.value, **extra)


@api_command(interrupts_app, "reject", render=render_record)
async def interrupts_reject(
    client: OrisClient, interrupt_id: InterruptIdArgument, reason: ReasonOption = None
) -> Any:
    """Reject an interrupt; the job is cancelled."""
    return await client.reject_interrupt(interrupt_id, reason)


# --- DLQ --------------------------------------------------------------------------------------

dlq_app = typer.Typer(help="Dead letters: attempts that failed for good.", no_args_is_help=True)
AttemptIdArgument = Annotated[str, typer.Argument(help="Attempt id.", show_default=False)]
DEAD_LETTER_COLUMNS = (
    Column("attempt_id", "attempt_id"),
    Column("thread_id", "run_id"),
    Column("attempt", "attempt_no"),
    Column("reason", "reason"),
    Column("replay_status", "replay_status", coloured=True),
    Column("replays", "replay_count"),
    Column("dead_at", "dead_at"),
    Column("error", "error", max_width=50),
)
REPLAY_RESULT_COLUMNS = (
    Column("attempt_id", "attempt_id"),
    Column("result", lambda row: "requeued" if row["ok"] else "failed", coloured=True),
    Column("thread_id", lambda row: (row.get("data") or {}).get("thread_id")),
    Column("replays", lambda row: (row.get("data") or {}).get("replay_count")),
    Column("error", lambda row: (row.get("error") or {}).get("message"), max_width=60),
)


def render_dead_letter_list(data: Mapping[str, Any]) -> None:
    """Print dead letters, newest first."""
    render_table(data.get("entries") or [], DEAD_LETTER_COLUMNS, empty="(no dead letters)")
    render_next_cursor(data)


def render_replay_summary(data: Mapping[str, Any]) -> None:
    """Print the outcome of each replay and the totals."""
    render_table(data["results"], REPLAY_RESULT_COLUMNS)
    failed = status_colour("failed") if data["failed"] else "failed"
    print(f"\n{data['requeued']} requeued, {data['failed']} {failed}")


def replay_exit_code(data: Mapping[str, Any]) -> int:
    """Exit 1 when any replay was refused."""
    return EXIT_FAILURE if data["failed"] else 0


@api_command(dlq_app, "list", render=render_dead_letter_list)
async def dlq_list(
    client: OrisClient,
    status: Annotated[
        ReplayStatus | None, typer.Option("--status", help="Only this replay status.")
    ] = None,
    limit: LimitOption = None,
    workflow: WorkflowFilter = None,
    tenant: TenantFilter = None,
    created_after: DeadAfterFilter = None,
    created_before: DeadBeforeFilter = None,
    cursor: CursorOption = None,
) -> Any:
    """List dead letters, newest first; page with --cursor."""
    return await client.list_dlq(
        None if status is None else status.value,
        limit,
        workflow=workflow,
        tenant_id=tenant,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
    )


@api_command(dlq_app, "show", render=render_record)
async def dlq_show(client: OrisClient, attempt_id: AttemptIdArgument) -> Any:
    """Show one dead letter."""
    return await client.get_dlq(attempt_id)


def render_dlq_replay(data: Mapping[str, Any]) -> None:
    """Each listed replay's outcome, or a bulk replay's."""
    if "dry_run" in data:
        render_bulk(data, "dead letters", "attempt_ids", "replayed")
    else:
        render_replay_summary(data)


@api_command(dlq_app, "replay", render=render_dlq_replay, exit_code=bulk_exit_code)
async def dlq_replay(
    client: OrisClient,
    attempt_ids: Annotated[
        list[str] | None,
        typer.Argument(help="One or more attempt ids (or --all).", show_default=False),
    ] = None,
    override_reason: OverrideOption = None,
    all_pending: Annotated[
        bool,
        typer.Option("--all", help="Replay every pending dead letter the filter options select."),
    ] = False,
    workflow: WorkflowFilter = None,
    tenant: TenantFilter = None,
    created_after: DeadAfterFilter = None,
    created_before: DeadBeforeFilter = None,
    thread_ids: ThreadIdsFilter = None,
    limit: BulkLimitOption = None,
    dry_run: DryRunOption = False,
) -> Any:
    """Requeue dead letters with a fresh retry budget; continues past refusals (exit 1 if any).

    With --all, every pending dead letter the filters select, in one audited request."""
    from oris.client.http import ApiError

    filters = {
        "workflow": workflow,
        "tenant_id": tenant,
        "created_after": created_after,
        "created_before": created_before,
        "thread_ids": thread_ids or None,
        "limit": limit,
    }
    if all_pending:
        if attempt_ids:
            raise typer.BadParameter("give attempt ids or --all, not both")
        return await client.replay_dlq_many(
            **filters, dry_run=dry_run, override_reason=override_reason
        )
    if any(value is not None for value in filters.values()) or dry_run:
        raise typer.BadParameter("filter options and --dry-run need --all")
    if not attempt_ids:
        raise typer.BadParameter("give one or more attempt ids, or --all")
    unique = list(dict.fromkeys(attempt_ids))
    results: list[dict[str, Any]] = []
    for index, attempt_id in enumerate(unique, start=1):
        position = f"[{index}/{len(unique)}] " if len(unique) > 1 else ""
        try:
            data = await client.replay_dlq(attempt_id, override_reason=override_reason)
        except ApiError as error:
            report_api_error(error, prefix=f"{position}{attempt_id}: ")
            results.append(
                {
                    "attempt_id": attempt_id,
                    "ok": False,
                    "error": {
                        "status": error.status,
                        "code": error.code,
                        "message": error.message,
                        "request_id": error.request_id,
                        "details": error.details,
                    },
                }
            )
            continue
        results.append({"attempt_id": attempt_id, "ok": True, "data": data})
        if position:
            print(f"oris: {position}{attempt_id}: requeued", file=sys.stderr)
    failed = sum(1 for result in results if not result["ok"])
    return {"results": results, "requeued": len(results) - failed, "failed": failed}


# --- audit ------------------------------------------------------------------------------------

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
AUDIT_COLUMNS = (
    Column("id", "audit_id"),
    Column("created_at", "created_at"),
    Column(
        "actor",
        lambda row: ":".join(
            str(part) for part in (row.get("actor_type"), row.get("actor_id")) if part
        ),
    ),
    Column("role", "actor_role"),
    Column("action", "action"),
    Column(
        "resource",
        lambda row: "/".join(
            str(part) for part in (row.get("resource_type"), row.get("resource_id")) if part
        ),
        max_width=60,
    ),
    Column("result", "result", coloured=True),
    Column("http", "status_code"),
    Column("request_id", "request_id"),
)


def render_audit_logs(data: Mapping[str, Any]) -> None:
    """Print audit rows, newest first, and how to fetch the next page."""
    render_table(data.get("logs") or [], AUDIT_COLUMNS, empty="(no audit rows)")
    if data.get("next_before_id") is not None:
        print(f"\nmore rows: --before-id {data['next_before_id']}")
    if data.get("next_cursor"):
        print(f"next page (same filters): --cursor {data['next_cursor']}")


@api_command(audit_app, "logs", render=render_audit_logs)
async def audit_logs(
    client: OrisClient,
    action: Annotated[str | None, typer.Option("--action", help="e.g. job.cancel.")] = None,
    request_id: Annotated[str | None, typer.Option("--request-id")] = None,
    actor_id: Annotated[str | None, typer.Option("--actor-id")] = None,
    resource_type: Annotated[str | None, typer.Option("--resource-type")] = None,
    resource_id: Annotated[str | None, typer.Option("--resource-id")] = None,
    result: Annotated[str | None, typer.Option("--result")] = None,
    from_ms: Annotated[
        int | None, typer.Option("--from-ms", help="From this Unix time (ms).")
    ] = None,
    to_ms: Annotated[int | None, typer.Option("--to-ms", help="Up to this Unix time (ms).")] = None,
    limit: LimitOption = None,
    before_id: Annotated[
        int | None, typer.Option("--before-id", help="Page: rows older than this id.")
    ] = None,
    cursor: CursorOption = None,
) -> Any:
    """List audit rows, newest first."""
    return await client.audit_logs(
        action=action,
        request_id=request_id,
        actor_id=actor_id,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        from_ms=from_ms,
        to_ms=to_ms,
        limit=limit,
        before_id=before_id,
        cursor=cursor,
    )


def render_audit_verify(data: Mapping[str, Any]) -> None:
    """Print the chain verdict."""
    if "files" in data:
        render_archive_verify(data)
        return
    anchor = data.get("anchor") or {}
    after = (
        f", starting after archived audit_id {anchor['last_audit_id']}"
        if anchor.get("last_audit_id")
        else ""
    )
    if data.get("ok"):
        print(f"audit chain intact: {data.get('rows_checked')} rows checked{after}")
    else:
        print(
            f"audit chain BROKEN at audit_id {data.get('first_bad_audit_id')}: {data.get('problem')}"
            f" ({data.get('rows_checked')} rows checked{after})"
        )


def render_archive_verify(data: Mapping[str, Any]) -> None:
    """Print the verdict on archive files."""
    start = data.get("starts_after_hash")
    where = "the start of the chain" if start is None else f"hash {start}"
    if data["ok"]:
        print(
            f"audit archive intact: {data['rows_checked']} rows (audit_id "
            f"{data['first_audit_id']}..{data['last_audit_id']}) in {len(data['files'])} "
            f"file(s), starting after {where}, ending at hash {data['last_row_hash']}"
        )
    else:
        print(
            f"audit archive BROKEN at audit_id {data['first_bad_audit_id']} "
            f"({data.get('file')}:{data.get('line')}): {data['problem']}"
        )


def verify_archive_files(files: list[Path]) -> dict[str, Any]:
    """Check archive files (in the order given) on their own: every row matches its hash and
    links to the row before it, across files too."""
    located: list[tuple[str, int]] = []

    def rows() -> Any:
        for path in files:
            with path.open(encoding="utf-8") as handle:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    located.append((str(path), number))
                    try:
                        row = json.loads(text)
                    except ValueError as error:
                        raise typer.BadParameter(f"{path}:{number} is not JSON ({error})") from None
                    if not isinstance(row, dict) or "audit_id" not in row:
                        raise typer.BadParameter(f"{path}:{number} is not an audit row")
                    yield row

    try:
        from oris.domain.audit_chain import check_segment

        check = check_segment(rows())
    except OSError as error:
        fail(f"cannot read the archive: {error}", EXIT_USAGE)
    result: dict[str, Any] = {
        "files": [str(path) for path in files],
        "ok": check.ok,
        "rows_checked": check.rows_checked,
        "first_audit_id": check.first_audit_id,
        "last_audit_id": check.last_audit_id,
        "starts_after_hash": check.starts_after_hash,
        "last_row_hash": check.last_row_hash,
        "first_bad_audit_id": check.first_bad_audit_id,
        "problem": check.problem,
    }
    if not check.ok and located:
        result["file"], result["line"] = located[-1]
    return result


@api_command(
    audit_app,
    "verify",
    render=render_audit_verify,
    exit_code=lambda data: 0 if data.get("ok") else 1,
)
async def audit_verify(
    client: OrisClient,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            help="Check archive files (from `oris audit archive`, oldest first) offline "
            "instead of the server's chain. Repeat for several.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> Any:
    """Check the audit hash chain; exit 1 and name the first altered row if it is broken."""
    if files:
        return verify_archive_files(files)
    return await client.request("GET", "/v1/audit/verify")


# --- incidents --------------------------------------------------------------------------------

incident_app = typer.Typer(
    help="Incident freeze: while open, replays and resumes need --override-reason.",
    no_args_is_help=True,
)


def render_incident(data: Mapping[str, Any] | None) -> None:
    """Print one incident (or that none is open)."""
    if not data:
        print("no incident is open")
        return
    render_fields(data, list(data))


@api_command(incident_app, "open", render=render_incident)
async def incident_open(
    client: OrisClient,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in /healthz and triage).")],
) -> Any:
    """Open an incident: freeze manual replay, DLQ replay and resume with a new payload."""
    return await client.request("POST", "/v1/incidents", json={"reason": reason})


@api_command(incident_app, "close", render=render_incident)
async def incident_close(
    client: OrisClient,
    reason: Annotated[str | None, typer.Option("--reason", help="How it was mitigated.")] = None,
) -> Any:
    """Close the open incident and lift the freeze."""
    return await client.request("POST", "/v1/incidents/close", json={"reason": reason})


@api_command(incident_app, "status", render=render_incident)
async def incident_status(client: OrisClient) -> Any:
    """Show the open incident, if any."""
    data = await client.request("GET", "/v1/incidents")
    return data.get("current") if isinstance(data, dict) else None


# --- keys -------------------------------------------------------------------------------------

keys_app = typer.Typer(help="Managed API keys (admin only).", no_args_is_help=True)
KeyIdArgument = Annotated[str, typer.Argument(help="Key id.", show_default=False)]
KEY_COLUMNS = (
    Column("key_id", "key_id"),
    Column("role", "role"),
    Column("status", "status", coloured=True),
    Column("worker_id_prefix", "worker_id_prefix"),
    Column("created_at", "created_at"),
    Column("last_used_at", "last_used_at"),
    Column("description", "description", max_width=40),
)


def render_key(data: Mapping[str, Any]) -> None:
    """Print a key; a secret, when the response has one, last and with the shown-once notice."""
    render_fields(data, [key for key in data if key not in {"secret", "warnings"}])
    if "secret" in data:
        print()
        print(f"secret  {data['secret']}")
        print(SHOWN_ONCE_NOTICE)


def secret_notice(data: Mapping[str, Any]) -> str | None:
    """The shown-once notice when ``data`` carries a secret."""
    return SHOWN_ONCE_NOTICE if "secret" in data else None


def render_key_list(data: Mapping[str, Any]) -> None:
    """Print keys (the server never returns their secrets)."""
    render_table(data.get("keys") or [], KEY_COLUMNS, empty="(no keys)")


@api_command(keys_app, "create", render=render_key, json_notice=secret_notice)
async def keys_create(
    client: OrisClient,
    role: Annotated[KeyRole, typer.Option("--role", help="What the key may do.")],
    worker_id_prefix: Annotated[
        str | None,
        typer.Option("--worker-id-prefix", help="Worker keys: worker ids must start with this."),
    ] = None,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Key id.", show_default="generated")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
) -> Any:
    """Create a key; its secret is printed once and never again."""
    return await client.create_key(
        role.value, key_id=key_id, worker_id_prefix=worker_id_prefix, description=description
    )


@api_command(keys_app, "list", render=render_key_list)
async def keys_list(client: OrisClient) -> Any:
    """List keys (without secrets)."""
    return await client.list_keys()


@api_command(keys_app, "disable", render=render_key)
async def keys_disable(client: OrisClient, key_id: KeyIdArgument) -> Any:
    """Disable a key at once."""
    return await client.disable_key(key_id)


@api_command(keys_app, "rotate", render=render_key, json_notice=secret_notice)
async def keys_rotate(
    client: OrisClient,
    key_id: KeyIdArgument,
    reactivate: Annotated[
        bool,
        typer.Option(
            "--reactivate", help="Rotate a disabled key too, making it active again (audited)."
        ),
    ] = False,
) -> Any:
    """Issue a new secret for a key (printed once); the old secret stops working. A disabled
    key is refused unless --reactivate is given."""
    return await client.rotate_key(key_id, reactivate=reactivate)


def attach_group(app: typer.Typer, name: str, group: typer.Typer) -> None:
    """Add ``group`` as ``oris <name>``, merging into a same-named group another module added."""
    for info in app.registered_groups:
        if info.name == name and isinstance(info.typer_instance, typer.Typer):
            info.typer_instance.registered_commands.extend(group.registered_commands)
            return
    app.add_typer(group, name=name)


def register(app: typer.Typer) -> None:
    """Attach the operator command groups and ``oris smoke`` to the root ``oris`` app."""
    # Imported here: these modules reuse this module's connection options.
    from oris.cli.schedules import schedules_app
    from oris.cli.smoke import smoke

    for name, group in (
        ("jobs", jobs_app),
        ("interrupts", interrupts_app),
        ("dlq", dlq_app),
        ("audit", audit_app),
        ("incident", incident_app),
        ("keys", keys_app),
        ("schedules", schedules_app),
    ):
        attach_group(app, name, group)
    app.command("smoke")(smoke)
