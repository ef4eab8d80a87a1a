"""One dispatched attempt: run its workflow, keep its lease alive, report its steps, ack it once.

Lease fencing: as soon as the server answers 404 or 409 to a heartbeat, a step report or the ack,
the attempt belongs to nobody (or to another worker). The handler is cancelled at once and this
worker sends nothing more for the attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from oris.client.http import ApiError, OrisClient, ServerUnreachable
from oris.domain.validation import MAX_DURATION_MS
from oris.worker.acks import AckBatcher
from oris.worker.backoff import Backoff
from oris.worker.context import Context, json_value
from oris.worker.dispatch import Dispatch
from oris.worker.errors import LeaseLost, PermanentError, RetryableError, Sleeping, Suspended
from oris.worker.registry import Registry, WorkflowFunction

log = logging.getLogger("oris.worker")

FENCED_STATUSES = frozenset({404, 409})
AUTH_STATUSES = frozenset({401, 403})
RETRY_INITIAL_SECONDS = 0.1
DEDUPE_TOKEN_MAX_LENGTH = 256
ERROR_MESSAGE_MAX_LENGTH = 4000


@dataclass(frozen=True, slots=True)
class Completed:
    """The workflow returned ``output``."""

    output: Any

    def ack_fields(self) -> dict[str, Any]:
        """The ``ack`` body fields for this outcome."""
        return {"terminal_status": "completed", "output": self.output}


@dataclass(frozen=True, slots=True)
class Failed:
    """The workflow raised; ``error`` is the ack's error object."""

    error: dict[str, Any]

    def ack_fields(self) -> dict[str, Any]:
        """The ``ack`` body fields for this outcome."""
        return {"terminal_status": "failed", "error": self.error}


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The workflow waits for a human answer to ``value`` (interrupt ``key``)."""

    value: Any
    key: str

    def ack_fields(self) -> dict[str, Any]:
        """The ``ack`` body fields for this outcome."""
        return {
            "terminal_status": "interrupted",
            "interrupt": {"value": self.value, "step": self.key},
        }


@dataclass(frozen=True, slots=True)
class Slept:
    """The workflow sleeps until ``wake_at``; the attempt ends and is dispatched again then."""

    wake_at: datetime

    def ack_fields(self) -> dict[str, Any]:
        """The ``ack`` body fields for this outcome."""
        return {
            "terminal_status": "sleeping",
            "wake_at": self.wake_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        }


Outcome = Completed | Failed | Interrupted | Slept


def error_body(error: BaseException) -> dict[str, Any]:
    """The ack's ``error`` object: retryable unless the error is a ``PermanentError``."""
    message = str(error) or type(error).__name__
    body: dict[str, Any] = {
        "message": message[:ERROR_MESSAGE_MAX_LENGTH],
        "type": type(error).__name__,
        "retryable": not isinstance(error, PermanentError),
    }
    if isinstance(error, RetryableError) and error.delay_ms is not None:
        # Within the server's range, so the ack is not refused for the hint alone.
        body["retry_delay_ms"] = min(error.delay_ms, MAX_DURATION_MS)
    return body


def dedupe_token(attempt_id: str, attempt_no: int, step: str) -> str:
    """A report's dedupe token: stable for one step of one execution, within the server's bound."""
    token = f"{attempt_id}:{attempt_no}:{step}"
    if len(token) <= DEDUPE_TOKEN_MAX_LENGTH:
        return token
    digest = hashlib.sha256(step.encode()).hexdigest()[:40]
    return f"{attempt_id}:{attempt_no}:sha256:{digest}"


class Attempt:
    """Executes one dispatch to its end; ``run()`` never raises except ``CancelledError``."""

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        client: OrisClient,
        worker_id: str,
        registry: Registry,
        retry_max_seconds: float,
        acks: AckBatcher | None = None,
    ) -> None:
        self.dispatch = dispatch
        self._client = client
        self._acks = acks
        self._worker_id = worker_id
        self._registry = registry
        self._retry_max_seconds = retry_max_seconds
        self._lost = False
        self._settling = False
        # The job's trace: every call this attempt makes continues it (the server answers
        # each call with the next span, which the following call then carries).
        self._traceparent: str | None = dispatch.trace.get("traceparent")
        self._fields = {
            "thread_id": dispatch.thread_id,
            "attempt_id": dispatch.attempt_id,
            "attempt_no": dispatch.attempt_no,
            "worker_id": worker_id,
            "workflow": dispatch.workflow,
        }

    @property
    def settling(self) -> bool:
        """Whether the handler has finished and only the ack remains."""
        return self._settling

    async def run(self) -> None:
        """Run the workflow with heartbeats, then ack its outcome unless the lease was lost."""
        fn = self._registry.get(self.dispatch.workflow)
        async with asyncio.TaskGroup() as group:
            handler = group.create_task(
                self._call(fn), name=f"oris-handler-{self.dispatch.attempt_id}"
            )
            keeper = group.create_task(
                self._keep_lease(handler), name=f"oris-heartbeat-{self.dispatch.attempt_id}"
            )
            # asyncio.wait, not await: the handler being cancelled for a lost lease is an
            # expected ending here, while cancellation of this task itself must propagate.
            await asyncio.wait({handler})
            # The outcome is decided: the lease is no longer renewed. Should the ack never
            # land, the lease then expires and the server requeues the attempt, instead of a
            # finished attempt being kept alive (and its job ``running``) indefinitely.
            keeper.cancel()
            outcome = None if handler.cancelled() else handler.result()
            if outcome is not None and not self._lost:
                await self._settle(outcome)

    async def _call(self, fn: WorkflowFunction | None) -> Outcome | None:
        if fn is None:
            return Failed(
                {
                    "message": f"workflow {self.dispatch.workflow!r} is not registered "
                    f"in worker {self._worker_id}",
                    "type": "UnknownWorkflow",
                    "retryable": False,
                }
            )
        ctx = Context(
            self.dispatch,
            worker_id=self._worker_id,
            reporter=self,
            logger=logging.getLogger("oris.workflow"),
        )
        try:
            output = await fn(ctx, self.dispatch.input)
            return Completed(json_value(output, "workflow output"))
        except Suspended as suspended:
            return Interrupted(suspended.value, suspended.key)
        except Sleeping as sleeping:
            return Slept(sleeping.wake_at)
        except LeaseLost:
            return None
        except Exception as error:
            deliberate = isinstance(error, RetryableError | PermanentError)
            log.warning(
                "workflow raised",
                extra={**self._fields, "error_type": type(error).__name__, "error": str(error)},
                # A deliberate error says all there is to say; anything else needs its traceback.
                exc_info=None if deliberate else error,
            )
            return Failed(error_body(error))

    async def report_step(self, name: str, state: dict[str, Any]) -> None:
        """Send a finished step with its checkpoint; ``LeaseLost`` when the lease is gone."""
        dispatch = self.dispatch
        body = {
            "attempt_id": dispatch.attempt_id,
            "action_id": name,
            "status": "completed",
            "dedupe_token": dedupe_token(dispatch.attempt_id, dispatch.attempt_no, name),
            "lease_id": dispatch.lease_id,
            "checkpoint": {"state": state, "step": name},
        }
        try:
            response = await self._send(
                "report-step",
                lambda: self._client.report_step(
                    self._worker_id, traceparent=self._traceparent, **body
                ),
            )
        except ApiError as error:
            raise PermanentError(
                f"the server refused the report of step {name!r}: {error.message}"
            ) from None
        self._follow_trace(response)
        log.info(
            "step reported",
            extra={
                **self._fields,
                "step": name,
                "report_status": response.get("status"),
                "checkpoint_id": response.get("checkpoint_id"),
            },
        )

    def _follow_trace(self, response: dict[str, Any]) -> None:
        trace = response.get("trace")
        if isinstance(trace, dict) and isinstance(trace.get("traceparent"), str):
            self._traceparent = trace["traceparent"]

    async def _keep_lease(self, handler: asyncio.Task[Outcome | None]) -> None:
        interval = self.dispatch.heartbeat_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                answer = await self._client.heartbeat(
                    self._worker_id, self.dispatch.lease_id, traceparent=self._traceparent
                )
                self._follow_trace(answer)
            except ApiError as error:
                if error.status in FENCED_STATUSES:
                    self._lose("heartbeat", error)
                    handler.cancel()
                    return
                log.warning(
                    "heartbeat failed; will try again",
                    extra={**self._fields, "status": error.status, "error": error.message},
                )
            except (ServerUnreachable, httpx.TransportError) as error:
                log.warning(
                    "heartbeat failed: server unreachable; will try again",
                    extra={**self._fields, "error": str(error)},
                )

    async def _settle(self, outcome: Outcome) -> None:
        self._settling = True
        fields = outcome.ack_fields()
        try:
            response = await self._ack(fields)
        except LeaseLost:
            return
        except ApiError as error:
            if fields["terminal_status"] == "failed" or error.status in AUTH_STATUSES:
                # A refused credential is not the outcome's fault: acking it as failed instead
                # would be refused the same way. The lease expires and the attempt is requeued.
                log.error(
                    "ack refused by the server",
                    extra={**self._fields, "status": error.status, "error": error.message},
                )
                return
            # E.g. an output over the server's body limit: record why instead of leaving the
            # attempt to expire and run again with the same result.
            fields = Failed(
                {
                    "message": f"the server refused the {fields['terminal_status']} ack: "
                    f"{error.message}",
                    "type": "AckRefused",
                    "retryable": False,
                }
            ).ack_fields()
            try:
                response = await self._ack(fields)
            except (LeaseLost, ApiError):
                return
        log.info(
            "attempt acked",
            extra={
                **self._fields,
                "terminal_status": fields["terminal_status"],
                "ack_status": response.get("status"),
                "interrupt_id": response.get("interrupt_id"),
                "next_retry_at": response.get("next_retry_at"),
            },
        )

    async def _ack(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self._acks is not None:
            batcher = self._acks
            body = {
                "attempt_id": self.dispatch.attempt_id,
                "lease_id": self.dispatch.lease_id,
                **fields,
            }
            return await self._send("ack", lambda: batcher.ack(body, self._traceparent))
        return await self._send(
            "ack",
            lambda: self._client.ack(
                self._worker_id,
                traceparent=self._traceparent,
                attempt_id=self.dispatch.attempt_id,
                lease_id=self.dispatch.lease_id,
                **fields,
            ),
        )

    async def _send(
        self, what: str, call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Call until answered: transient failures are retried, 404/409 raise ``LeaseLost``."""
        backoff = Backoff(RETRY_INITIAL_SECONDS, self._retry_max_seconds)
        while True:
            if self._lost:
                raise LeaseLost
            try:
                return await call()
            except ApiError as error:
                if error.status in FENCED_STATUSES:
                    self._lose(what, error)
                    raise LeaseLost from None
                if not error.retryable:
                    raise
                reason = f"{error.status} {error.code}: {error.message}"
            except (ServerUnreachable, httpx.TransportError) as error:
                reason = f"{type(error).__name__}: {error}"
            log.warning(f"{what} failed; will try again", extra={**self._fields, "error": reason})
            await asyncio.sleep(backoff.next_delay())

    def _lose(self, what: str, error: ApiError) -> None:
        if self._lost:
            return
        self._lost = True
        log.warning(
            "lease lost: handler cancelled, nothing more will be reported",
            extra={**self._fields, "via": what, "status": error.status, "error": error.message},
        )
