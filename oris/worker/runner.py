"""The worker process: poll for attempts, run each in a supervised task, shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Callable
from typing import Any

import httpx

from oris.client.http import ApiError, OrisClient, ServerUnreachable
from oris.config import WorkerSettings
from oris.worker.acks import AckBatcher, PendingAck
from oris.worker.attempt import AUTH_STATUSES, Attempt
from oris.worker.backoff import Backoff
from oris.worker.dispatch import Dispatch
from oris.worker.registry import Registry

log = logging.getLogger("oris.worker")

POLL_MIN_INTERVAL_SECONDS = 0.05
POLL_ERROR_INITIAL_SECONDS = 0.2
AUTH_BACKOFF_INITIAL_SECONDS = 1.0
EXIT_SECOND_SIGNAL = 130
_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9\-_.:]")


def default_worker_id() -> str:
    """``<hostname>-<pid>``, limited to the characters the API accepts in an id."""
    host = _UNSAFE_ID_CHARACTERS.sub("-", socket.gethostname())[:100] or "worker"
    return f"{host}-{os.getpid()}"


class _Stopped(Exception):
    """Shutdown began while a poll was waiting."""


class Worker:
    """Polls the API for the registry's workflows and executes up to N attempts at once."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if len(registry) == 0:
            raise ValueError("the registry has no workflows; a worker would poll for nothing")
        self.settings = settings
        self.registry = registry
        self.worker_id = settings.worker_id or default_worker_id()
        self._transport = transport
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._attempts: dict[asyncio.Task[None], Attempt] = {}
        self._acks: AckBatcher | None = None
        # Sent with every poll, so the server applies them to what it leases to this worker.
        self._workflow_defaults = registry.wire_defaults() or None

    @property
    def active_attempts(self) -> int:
        """How many attempts are executing right now."""
        return len(self._attempts)

    def shutdown(self) -> None:
        """Stop polling; ``run()`` then lets running attempts finish within the grace period."""
        if self._stopping.is_set():
            return
        log.info(
            "shutdown requested: no more polling; waiting for running attempts",
            extra={
                "worker_id": self.worker_id,
                "active_attempts": len(self._attempts),
                "grace_seconds": self.settings.worker_shutdown_grace_seconds,
            },
        )
        self._stopping.set()
        self._slot_freed.set()

    async def run(self) -> None:
        """Poll and execute until ``shutdown()``; returns once every attempt has ended."""
        async with OrisClient(self.settings, transport=self._transport) as client:
            self._acks = AckBatcher(client, self.worker_id)
            log.info(
                "worker started",
                extra={
                    "worker_id": self.worker_id,
                    "server_url": self.settings.server_url,
                    "workflows": self.registry.names(),
                    "concurrency": self.settings.worker_concurrency,
                },
            )
            try:
                await self._poll_until_stopped(client)
                await self._drain()
            finally:
                await self._cancel_attempts()
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _poll_until_stopped(self, client: OrisClient) -> None:
        acks = self._acks
        assert acks is not None
        max_interval = self.settings.worker_poll_max_interval_seconds
        idle = Backoff(POLL_MIN_INTERVAL_SECONDS, max_interval)
        errors = Backoff(POLL_ERROR_INITIAL_SECONDS, max_interval)
        refused = _AuthBackoff(self.worker_id, self.settings.worker_auth_backoff_max_seconds)
        workflows = self.registry.names()
        while not self._stopping.is_set():
            carried: list[PendingAck] = []
            free = self.settings.worker_concurrency - len(self._attempts)
            if free <= 0:
                # Every slot is busy: wait for one, and take the acks of the attempts that
                # finish meanwhile along with the next poll.
                self._slot_freed.clear()
                if acks.carries:
                    acks.hold(self._slot_freed.set)
                try:
                    await self._slot_freed.wait()
                    if self._stopping.is_set():
                        return
                    if acks.carries:
                        carried = await acks.collect()
                finally:
                    acks.release()
                free = self.settings.worker_concurrency - len(self._attempts) + len(carried)
                if free <= 0:
                    # Still no slot for new work: attempts whose acks were answered a moment
                    # ago, or that are retrying an ack, count until their tasks end. The acks
                    # taken cannot ride on a poll now, and must not wait for one either (their
                    # attempts hold the very slots being waited for): they go on their own.
                    acks.send_now(carried)
                    continue
            try:
                data = await self._long_poll(client, free, workflows, carried)
            except _Stopped:
                return
            except ApiError as error:
                if error.status in AUTH_STATUSES:
                    # Credentials do not get better by asking again soon: back off further
                    # each time, up to the cap, and say so once per step, not per poll.
                    await self._pause(refused.next_delay(error))
                    continue
                log.log(
                    logging.WARNING if error.retryable else logging.ERROR,
                    "poll failed; will try again",
                    extra={
                        "worker_id": self.worker_id,
                        "status": error.status,
                        "code": error.code,
                        "error": error.message,
                    },
                )
                await self._pause(errors.next_delay())
                continue
            except (ServerUnreachable, httpx.TransportError) as error:
                log.warning(
                    "poll failed: server unreachable; will try again",
                    extra={"worker_id": self.worker_id, "error": str(error)},
                )
                await self._pause(errors.next_delay())
                continue
            if not isinstance(data, dict):
                acks.send_again(carried)
                log.warning(
                    "poll answer is not an object; will try again",
                    extra={"worker_id": self.worker_id, "answer": repr(data)[:200]},
                )
                await self._pause(errors.next_delay())
                continue
            if carried:
                acks.carried(carried, data)
            errors.reset()
            refused.reset()
            dispatches = data.get("dispatches") or []
            if data.get("decision") == "dispatched" and dispatches:
                idle.reset()
                for item in dispatches:
                    self._start(client, item)
                # One turn of the loop: the new attempts schedule their handlers before the
                # next poll is built, so handlers start ahead of that request's CPU work.
                await asyncio.sleep(0)
            elif data.get("decision") == "backpressure":
                log.debug(
                    "poll answered backpressure",
                    extra={"worker_id": self.worker_id, "reason": data.get("reason")},
                )
                await self._pause(idle.next_delay())
            elif self.settings.worker_poll_wait_ms > 0 or carried:
                # The server already waited for work, or the poll only carried acks and did
                # not wait: ask again at once.
                idle.reset()
            else:
                await self._pause(idle.next_delay())

    async def _long_poll(
        self, client: OrisClient, free: int, workflows: list[str], carried: list[PendingAck]
    ) -> Any:
        """One poll that waits server-side for work; abandoned as soon as shutdown starts.

        A poll carrying acks does not wait (their attempts are waiting for the answers); should
        it fail, the acks are sent again on their own, where a repeat is answered as the first.
        """
        wait_ms = None if carried else self.settings.worker_poll_wait_ms or None
        acks = [pending.wire() for pending in carried] or None
        poll = asyncio.ensure_future(
            client.poll(
                self.worker_id,
                limit=free,
                workflows=workflows,
                wait_ms=wait_ms,
                acks=acks,
                workflow_defaults=self._workflow_defaults,
            )
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        answered = False
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if poll.done():
                answer = poll.result()  # raises what the poll raised
                answered = True
                return answer
            # Shutting down while the server waits for work: give up the poll. Should it have
            # leased something in that instant, the lease expires and the work is requeued.
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            raise _Stopped
        finally:
            stopping.cancel()
            poll.cancel()  # a no-op once it is done
            if carried and not answered:
                assert self._acks is not None
                self._acks.send_again(carried)

    def _start(self, client: OrisClient, item: Any) -> None:
        try:
            dispatch = Dispatch.from_wire(item)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # Its lease expires and the server requeues it; nothing else can be done here.
            log.error(
                "malformed dispatch ignored",
                extra={"worker_id": self.worker_id, "error": repr(error)},
            )
            return
        attempt = Attempt(
            dispatch,
            client=client,
            worker_id=self.worker_id,
            registry=self.registry,
            retry_max_seconds=self.settings.worker_poll_max_interval_seconds,
            acks=self._acks,
        )
        log.info(
            "attempt dispatched",
            extra={
                "thread_id": dispatch.thread_id,
                "attempt_id": dispatch.attempt_id,
                "attempt_no": dispatch.attempt_no,
                "worker_id": self.worker_id,
                "workflow": dispatch.workflow,
                "kind": dispatch.kind,
                "lease_id": dispatch.lease_id,
                "checkpoint_id": dispatch.checkpoint_id,
            },
        )
        task = asyncio.create_task(attempt.run(), name=f"oris-attempt-{dispatch.attempt_id}")
        self._attempts[task] = attempt
        task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        attempt = self._attempts.pop(task, None)
        self._slot_freed.set()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            fields = {} if attempt is None else {"attempt_id": attempt.dispatch.attempt_id}
            log.error(
                "attempt task failed unexpectedly; its lease will expire and it will be retried",
                extra={"worker_id": self.worker_id, **fields},
                exc_info=error,
            )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as shutdown is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain(self) -> None:
        grace = self.settings.worker_shutdown_grace_seconds
        if not self._attempts:
            return
        _, pending = await asyncio.wait(set(self._attempts), timeout=grace)
        if not pending:
            return
        # Past the grace period, cut off handlers still working but give attempts that are only
        # acking a bounded chance to land the ack, so finished work is not run again.
        running = {task for task in pending if not self._attempts[task].settling}
        log.warning(
            "grace period over: cancelling running attempts (their leases will expire)",
            extra={"worker_id": self.worker_id, "cancelled": len(running)},
        )
        for task in running:
            task.cancel()
        await asyncio.wait(pending, timeout=self.settings.request_timeout_seconds)

    async def _cancel_attempts(self) -> None:
        tasks = list(self._attempts)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _AuthBackoff:
    """Polls refused with 401/403: delays doubling from 1 s to ``max_seconds``, logged once
    per step (each new ceiling), and once more when the credentials are accepted again."""

    def __init__(self, worker_id: str, max_seconds: float) -> None:
        self._worker_id = worker_id
        self._backoff = Backoff(AUTH_BACKOFF_INITIAL_SECONDS, max_seconds)
        self._logged: float | None = None

    def next_delay(self, error: ApiError) -> float:
        ceiling = self._backoff.ceiling
        if ceiling != self._logged:
            self._logged = ceiling
            capped = ceiling >= self._backoff.max_seconds
            log.error(
                "poll refused: credentials not accepted; backing off"
                + (" (at the cap: further refusals are not logged)" if capped else ""),
                extra={
                    "worker_id": self._worker_id,
                    "status": error.status,
                    "code": error.code,
                    "error": error.message,
                    "backoff_seconds": ceiling,
                },
            )
        return self._backoff.next_delay()

    def reset(self) -> None:
        if self._logged is None:
            return
        self._logged = None
        self._backoff.reset()
        log.info("poll accepted again: credentials work", extra={"worker_id": self._worker_id})


async def run_until_signalled(worker: Worker) -> int:
    """Run ``worker`` until SIGTERM/SIGINT; a second signal exits at once. Returns the exit code."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            worker.shutdown()
            return
        log.warning(
            "second signal: exiting now without waiting for running attempts",
            extra={"worker_id": worker.worker_id, "signal": signal.Signals(signum).name},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        # Immediate by design: handlers may be stuck in threads that cannot be cancelled.
        # The server requeues their attempts once the leases expire.
        os._exit(EXIT_SECOND_SIGNAL)

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        await worker.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return 0


def run_worker(settings: WorkerSettings, registry: Registry) -> int:
    """Build a worker and run it in a new event loop until it is told to stop.

    The loop is uvloop's where it is installed (as for ``oris serve``): a worker spends most
    of its own time creating tasks and moving bytes, which uvloop does several times faster.
    """
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        return runner.run(run_until_signalled(Worker(settings, registry)))


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop
        return None
    return uvloop.new_event_loop
