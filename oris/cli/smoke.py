"""``oris smoke``: the runbook's recovery validation (run, inspect, worker poll, worker ack) as
one command against a live API.

The smoke job runs the reserved workflow ``oris.smoke``: the server dispatches ``oris.*``
workflows only to polls that name them, and every poll here names it, so real workers never see
a smoke job and a smoke run never leases real work.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oris.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail
from oris.cli.operator import (
    ApiKeyIdOption,
    ApiKeyOption,
    ApiTokenOption,
    JsonOption,
    RequestTimeoutOption,
    ServerUrlOption,
    client_settings,
)
from oris.cli.output import bold, describe_api_error, print_json, status_colour

if TYPE_CHECKING:
    # Imported where a smoke run needs them, so the CLI starts without httpx and pydantic.
    import httpx

    from oris.client.http import OrisClient
    from oris.config import ClientSettings

SMOKE_WORKFLOW = "oris.smoke"
DEFAULT_MAX_POLLS = 20
DEFAULT_POLL_DEADLINE_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.2


def new_thread_id(now: datetime | None = None) -> str:
    """A throwaway thread id: ``smoke-<UTC timestamp>-<random hex>``."""
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return f"smoke-{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def new_worker_id() -> str:
    """A throwaway worker id: ``smoke-worker-<random hex>``."""
    return f"smoke-worker-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one smoke step."""

    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class SmokeReport:
    """Everything a smoke run did, in order; ``exit_code`` says how it ended."""

    server_url: str
    thread_id: str
    worker_id: str
    steps: list[StepResult] = field(default_factory=list)
    leftovers_acked: list[str] = field(default_factory=list)
    polls: int = 0
    exit_code: int = EXIT_OK

    @property
    def ok(self) -> bool:
        """Whether every step passed."""
        return self.exit_code == EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report printed by ``oris smoke --json``."""
        failed = next((step.name for step in self.steps if not step.ok), None)
        return {
            "ok": self.ok,
            "server_url": self.server_url,
            "workflow": SMOKE_WORKFLOW,
            "thread_id": self.thread_id,
            "worker_id": self.worker_id,
            "failed_step": failed,
            "steps": [asdict(step) for step in self.steps],
            "polls": self.polls,
            "leftovers_acked": self.leftovers_acked,
        }


@dataclass(frozen=True, slots=True)
class SmokeLimits:
    """How long the poll step may look for the smoke job before it gives up."""

    max_polls: int = DEFAULT_MAX_POLLS
    poll_deadline_seconds: float = DEFAULT_POLL_DEADLINE_SECONDS
    poll_interval_seconds: float = POLL_INTERVAL_SECONDS


class StepFailed(Exception):
    """A step's check did not hold; the message is the step's detail."""


class SmokeFlow:
    """One smoke run: each step either records ``ok`` or stops the run with ``FAIL``."""

    def __init__(
        self,
        operator: OrisClient,
        worker: OrisClient,
        report: SmokeReport,
        limits: SmokeLimits,
        on_step: Callable[[StepResult], None],
    ) -> None:
        self._operator = operator
        self._worker = worker
        self._report = report
        self._limits = limits
        self._on_step = on_step
        self._dispatch: dict[str, Any] | None = None

    async def run(self) -> SmokeReport:
        """Run every step in order, stopping at the first failure."""
        import httpx

        from oris.client.http import ApiError, ServerUnreachable

        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("run", self._run),
            ("inspect", self._inspect),
            ("poll", self._poll),
            ("ack", self._ack),
            ("verify", self._verify),
        ]
        for name, step in steps:
            try:
                detail = await step()
            except StepFailed as error:
                self._record(name, False, str(error), EXIT_FAILURE)
            except ApiError as error:
                self._record(name, False, describe_api_error(error), EXIT_FAILURE)
            except httpx.UnsupportedProtocol:
                raise  # a malformed server URL is a usage error, reported by the command
            except (ServerUnreachable, httpx.TransportError) as error:
                self._record(name, False, f"server unreachable: {error}", EXIT_UNREACHABLE)
            else:
                self._record(name, True, str(detail), EXIT_OK)
            if not self._report.ok:
                break
        return self._report

    def _record(self, name: str, ok: bool, detail: str, exit_code: int) -> None:
        result = StepResult(name, ok, detail)
        self._report.steps.append(result)
        self._report.exit_code = exit_code
        self._on_step(result)

    async def _run(self) -> str:
        thread_id = self._report.thread_id
        data = await self._operator.run_job(thread_id, {"smoke": True}, workflow=SMOKE_WORKFLOW)
        if data.get("status") != "queued":
            raise StepFailed(f"expected status queued, got {data.get('status')!r}")
        return f"queued {thread_id} (attempt {data.get('attempt_id')})"

    async def _inspect(self) -> str:
        state = await self._operator.inspect_job(self._report.thread_id)
        if state.get("workflow") != SMOKE_WORKFLOW:
            raise StepFailed(f"expected workflow {SMOKE_WORKFLOW}, got {state.get('workflow')!r}")
        if state.get("status") != "queued":
            raise StepFailed(f"expected status queued, got {state.get('status')!r}")
        return "status queued"

    async def _poll(self) -> str:
        # Every poll names the smoke workflow, so only smoke jobs can be dispatched here; a
        # job an earlier, interrupted smoke run left behind is completed on the way.
        limits = self._limits
        deadline = time.monotonic() + limits.poll_deadline_seconds
        last_decision = None
        while self._report.polls < limits.max_polls and time.monotonic() < deadline:
            self._report.polls += 1
            response = await self._worker.poll(
                self._report.worker_id, workflows=[SMOKE_WORKFLOW], limit=1
            )
            last_decision = response.get("decision")
            dispatches = response.get("dispatches") or []
            if last_decision != "dispatched" or not dispatches:
                await asyncio.sleep(limits.poll_interval_seconds)
                continue
            for dispatch in dispatches:
                if dispatch.get("workflow") != SMOKE_WORKFLOW:
                    # Never complete real work; its lease expires and it is dispatched again.
                    raise StepFailed(
                        f"server dispatched workflow {dispatch.get('workflow')!r} "
                        f"(thread {dispatch.get('thread_id')}) to a poll filtered on "
                        f"{SMOKE_WORKFLOW}; left unacked"
                    )
                if dispatch.get("thread_id") == self._report.thread_id:
                    self._dispatch = dispatch
                else:
                    await self._ack_leftover(dispatch)
            if self._dispatch is not None:
                return self._poll_detail(self._dispatch)
        status = (await self._operator.inspect_job(self._report.thread_id)).get("status")
        raise StepFailed(
            f"smoke job not dispatched after {self._report.polls} polls "
            f"(last decision {last_decision!r}, job status {status!r})"
        )

    def _poll_detail(self, dispatch: dict[str, Any]) -> str:
        detail = (
            f"lease {dispatch.get('lease_id')} to {self._report.worker_id} "
            f"after {self._report.polls} poll(s)"
        )
        if self._report.leftovers_acked:
            detail += f"; completed {len(self._report.leftovers_acked)} leftover smoke job(s)"
        return detail

    async def _ack_leftover(self, dispatch: dict[str, Any]) -> None:
        response = await self._worker.ack(
            self._report.worker_id,
            attempt_id=dispatch.get("attempt_id"),
            lease_id=dispatch.get("lease_id"),
            terminal_status="completed",
            output={"smoke": "leftover", "completed_by": self._report.thread_id},
        )
        if response.get("status") != "completed":
            raise StepFailed(
                f"ack of leftover smoke job {dispatch.get('thread_id')} returned "
                f"status {response.get('status')!r}"
            )
        self._report.leftovers_acked.append(str(dispatch.get("thread_id")))

    async def _ack(self) -> str:
        dispatch = self._dispatch
        if dispatch is None:
            raise StepFailed("no dispatch to ack")
        response = await self._worker.ack(
            self._report.worker_id,
            attempt_id=dispatch.get("attempt_id"),
            lease_id=dispatch.get("lease_id"),
            terminal_status="completed",
            output={"smoke": True},
        )
        if response.get("status") != "completed":
            raise StepFailed(f"expected ack status completed, got {response.get('status')!r}")
        return "completed"

    async def _verify(self) -> str:
        state = await self._operator.inspect_job(self._report.thread_id)
        if state.get("status") != "completed":
            raise StepFailed(f"expected status completed, got {state.get('status')!r}")
        return "status completed"


async def run_smoke(
    settings: ClientSettings,
    *,
    worker_settings: ClientSettings | None = None,
    limits: SmokeLimits | None = None,
    on_step: Callable[[StepResult], None] = lambda _: None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SmokeReport:
    """Run the smoke flow; ``worker_settings`` gives poll/ack their own credentials."""
    from oris.client.http import OrisClient

    report = SmokeReport(
        server_url=settings.server_url, thread_id=new_thread_id(), worker_id=new_worker_id()
    )
    async with (
        OrisClient(settings, transport=transport) as operator,
        OrisClient(worker_settings or settings, transport=transport) as worker,
    ):
        flow = SmokeFlow(operator, worker, report, limits or SmokeLimits(), on_step)
        return await flow.run()


def print_step(result: StepResult) -> None:
    """One line per step: name, ok/FAIL, detail."""
    verdict = "ok" if result.ok else "FAIL"
    print(f"{bold(result.name.ljust(8))} {status_colour(verdict.ljust(4))}  {result.detail}")
    sys.stdout.flush()


def smoke(
    server_url: ServerUrlOption = None,
    api_token: ApiTokenOption = None,
    api_key_id: ApiKeyIdOption = None,
    api_key: ApiKeyOption = None,
    request_timeout_seconds: RequestTimeoutOption = None,
    worker_api_key_id: Annotated[
        str | None,
        typer.Option(
            "--worker-api-key-id",
            envvar="ORIS_SMOKE_WORKER_API_KEY_ID",
            help="Worker key id for poll/ack (default: the same credentials as run/inspect).",
            show_default=False,
            rich_help_panel="Connection",
        ),
    ] = None,
    worker_api_key: Annotated[
        str | None,
        typer.Option(
            "--worker-api-key",
            envvar="ORIS_SMOKE_WORKER_API_KEY",
            help="Secret of the worker key (its worker-id prefix must admit 'smoke-worker-').",
            show_default=False,
            rich_help_panel="Connection",
        ),
    ] = None,
    max_polls: Annotated[
        int,
        typer.Option(
            "--max-polls",
            envvar="ORIS_SMOKE_MAX_POLLS",
            min=1,
            help="Give up after this many polls.",
        ),
    ] = DEFAULT_MAX_POLLS,
    poll_deadline_seconds: Annotated[
        float,
        typer.Option(
            "--poll-deadline-seconds",
            envvar="ORIS_SMOKE_POLL_DEADLINE_SECONDS",
            min=0.1,
            help="Give up polling after this many seconds.",
        ),
    ] = DEFAULT_POLL_DEADLINE_SECONDS,
    json_output: JsonOption = False,
) -> None:
    """Validate recovery: run, inspect, poll and ack a throwaway oris.smoke job."""
    import httpx
    from pydantic import SecretStr

    from oris.config import ClientSettings

    settings = client_settings(
        server_url=server_url,
        api_token=api_token,
        api_key_id=api_key_id,
        api_key=api_key,
        request_timeout_seconds=request_timeout_seconds,
    )
    worker_settings = None
    if worker_api_key_id or worker_api_key:
        if not (worker_api_key_id and worker_api_key):
            raise typer.BadParameter(
                "give both --worker-api-key-id and --worker-api-key", param_hint="worker key"
            )
        worker_settings = ClientSettings(
            server_url=settings.server_url,
            api_token=None,
            api_key_id=worker_api_key_id,
            api_key=SecretStr(worker_api_key),
            request_timeout_seconds=settings.request_timeout_seconds,
        )
    limits = SmokeLimits(max_polls=max_polls, poll_deadline_seconds=poll_deadline_seconds)
    try:
        report = asyncio.run(
            run_smoke(
                settings,
                worker_settings=worker_settings,
                limits=limits,
                on_step=(lambda _: None) if json_output else print_step,
            )
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        fail(f"invalid server URL {settings.server_url!r}: {error}", EXIT_USAGE)
    if json_output:
        print_json(report.to_json())
    elif report.ok:
        print(f"smoke: {status_colour('ok')} ({settings.server_url}, thread {report.thread_id})")
    else:
        print(f"smoke: {status_colour('FAIL')} ({settings.server_url}, thread {report.thread_id})")
    if not report.ok:
        raise typer.Exit(report.exit_code)
