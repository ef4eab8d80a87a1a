"""The application client: submit jobs, wait for them, steer them (see docs/client.md).

:class:`AsyncClient` is the asyncio client; :class:`Client` offers the same methods for
synchronous code (it runs an :class:`AsyncClient` on a private event loop in a background
thread, so it also works where another event loop is already running). Both read their
server and credentials from the ``ORIS_*`` variables the CLI and the worker use unless given
explicitly: ``ORIS_SERVER_URL``, then ``ORIS_API_TOKEN`` (a bearer token) or
``ORIS_API_KEY_ID`` + ``ORIS_API_KEY``.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from oris.client.errors import (
    ApiError,
    JobCancelled,
    JobFailed,
    SubmitManyError,
    WaitTimeout,
)
from oris.client.http import OrisClient
from oris.client.models import (
    Cancellation,
    Interrupt,
    Job,
    JobPage,
    JobSpec,
    JobSummary,
    Queued,
)
from oris.config import ClientSettings

T = TypeVar("T")
TimeBound = datetime | str | int | None
DEFAULT_WAIT_SECONDS = 60.0


def _settings(
    server_url: str | None,
    api_token: str | None,
    api_key_id: str | None,
    api_key: str | None,
    request_timeout_seconds: float | None,
) -> ClientSettings:
    given: dict[str, Any] = {
        "server_url": server_url,
        "api_token": api_token,
        "api_key_id": api_key_id,
        "api_key": api_key,
        "request_timeout_seconds": request_timeout_seconds,
    }
    return ClientSettings(**{name: value for name, value in given.items() if value is not None})


def _bound(value: TimeBound) -> str | int | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _spec(item: JobSpec | Mapping[str, Any]) -> JobSpec:
    return item if isinstance(item, JobSpec) else JobSpec(**dict(item))


class AsyncClient:
    """An asyncio client for one Oris API; use it as ``async with AsyncClient() as oris:``."""

    def __init__(
        self,
        server_url: str | None = None,
        *,
        api_token: str | None = None,
        api_key_id: str | None = None,
        api_key: str | None = None,
        request_timeout_seconds: float | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or _settings(
            server_url, api_token, api_key_id, api_key, request_timeout_seconds
        )
        # The endpoint-per-method layer the worker uses; available for anything not wrapped.
        self.api = OrisClient(self.settings, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.api.aclose()

    async def submit(
        self,
        thread_id: str,
        input: Any = None,
        *,
        workflow: str | None = None,
        tenant_id: str | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        retry_policy: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        on_timeout: str | None = None,
        run_at: datetime | str | None = None,
        delay_ms: int | None = None,
    ) -> Queued:
        """Queue a job; returns at once (status ``queued``, or ``scheduled`` with a future
        ``run_at`` (an aware datetime or RFC 3339 text) or ``delay_ms``). With an
        ``idempotency_key`` a repeat returns the first answer (``idempotent_replay``) instead
        of a second job."""
        timeout_policy = None
        if timeout_ms is not None:
            timeout_policy = {"timeout_ms": timeout_ms, "on_timeout_status": on_timeout or "failed"}
        data = await self.api.run_job(
            thread_id,
            input,
            workflow=workflow,
            tenant_id=tenant_id,
            priority=priority,
            idempotency_key=idempotency_key,
            retry_policy=None if retry_policy is None else dict(retry_policy),
            timeout_policy=timeout_policy,
            run_at=run_at.isoformat() if isinstance(run_at, datetime) else run_at,
            delay_ms=delay_ms,
        )
        return Queued.from_api(data)

    async def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> builtins.list[Queued]:
        """Queue several jobs, in order; one request per job for now (the method stays when
        a batch endpoint arrives). Stops at the first refused job with
        :class:`SubmitManyError`, whose ``submitted`` holds the jobs queued before it: give
        each job an ``idempotency_key`` and a retry of the whole batch is safe."""
        submitted: builtins.list[Queued] = []
        for index, item in enumerate(jobs):
            spec = _spec(item)
            try:
                queued = await self.submit(
                    spec.thread_id,
                    spec.input,
                    workflow=spec.workflow,
                    tenant_id=spec.tenant_id,
                    priority=spec.priority,
                    idempotency_key=spec.idempotency_key,
                    retry_policy=spec.retry_policy,
                    timeout_ms=spec.timeout_ms,
                    on_timeout=spec.on_timeout,
                )
            except ApiError as error:
                raise SubmitManyError(index, submitted, error) from error
            submitted.append(queued)
        return submitted

    async def get(self, thread_id: str) -> Job:
        """The job's current state; :class:`NotFoundError` if there is no such job."""
        return Job.from_api(await self.api.inspect_job(thread_id))

    async def wait(
        self,
        thread_id: str,
        timeout: float | None = DEFAULT_WAIT_SECONDS,  # noqa: ASYNC109 (documented API)
        *,
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
        until_interrupted: bool = False,
    ) -> Job:
        """Wait until the job finishes and return it when it completed.

        Raises :class:`JobFailed` or :class:`JobCancelled` when it ended otherwise, and
        :class:`WaitTimeout` when ``timeout`` seconds pass first (``None``: wait for ever).
        With ``until_interrupted`` an interrupted job (waiting for a human) is returned too.
        The state is polled, starting every ``poll_interval`` seconds and backing off to
        ``max_poll_interval``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        while True:
            job = await self.get(thread_id)
            if job.status == "completed":
                return job
            if job.status == "failed":
                raise JobFailed(f"job {thread_id} failed: {job.error!r}", job, thread_id)
            if job.status == "cancelled":
                # The detail view also says why.
                job = Job.from_api(await self.api.job_detail(thread_id))
                message = f"job {thread_id} was cancelled: {job.cancel_reason!r}"
                raise JobCancelled(message, job, thread_id)
            if until_interrupted and job.status == "interrupted":
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"job {thread_id} still {job.status} after {timeout} s", job, thread_id
                    )
                interval = min(interval, left)
            await asyncio.sleep(interval)
            interval = min(interval * 2, max_poll_interval)

    async def cancel(self, thread_id: str, reason: str | None = None) -> Cancellation:
        """Cancel the job, its queued work and its lease (:class:`ConflictError` if it has
        finished already)."""
        return Cancellation.from_api(await self.api.cancel_job(thread_id, reason))

    async def replay(
        self,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        override_reason: str | None = None,
    ) -> Queued:
        """Run a finished job again from a checkpoint (default: its latest). A repeat of the
        same replay returns the first one's answer (``idempotent_replay``). While an incident
        is open it needs an ``override_reason`` (:class:`IncidentFreezeError` otherwise)."""
        extra = {"override_reason": override_reason} if override_reason else {}
        return Queued.from_api(await self.api.replay_job(thread_id, checkpoint_id, **extra))

    async def list(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: TimeBound = None,
        created_before: TimeBound = None,
        order: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        schedule_id: str | None = None,
    ) -> JobPage:
        """One page of jobs, most recently updated first (``order="created"``: newest
        first). Pass the page's ``next_cursor`` as ``cursor`` for the next page."""
        data = await self.api.list_jobs(
            status,
            limit,
            None,
            workflow=workflow,
            tenant_id=tenant_id,
            created_after=_bound(created_after),
            created_before=_bound(created_before),
            order=order,
            cursor=cursor,
            schedule_id=schedule_id,
        )
        return JobPage.from_api(data)

    async def iter_jobs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: TimeBound = None,
        created_before: TimeBound = None,
        order: str = "created",
        page_size: int = 200,
    ) -> AsyncIterator[JobSummary]:
        """Every matching job, page after page; each job once even while jobs are added."""
        cursor = None
        while True:
            page = await self.list(
                status=status,
                workflow=workflow,
                tenant_id=tenant_id,
                created_after=created_after,
                created_before=created_before,
                order=order,
                limit=page_size,
                cursor=cursor,
            )
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def interrupts(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = "pending",
        limit: int | None = None,
    ) -> builtins.list[Interrupt]:
        """Interrupts, newest first: by default the pending ones (``status=None``: all)."""
        data = await self.api.list_interrupts(status, thread_id, limit)
        return [Interrupt.from_api(item) for item in data.get("interrupts") or []]

    async def resume(
        self, interrupt: Interrupt | str, value: Any, *, override_reason: str | None = None
    ) -> Queued:
        """Answer an interrupt with ``value``: the job runs on and receives it. Repeating the
        same value returns the first answer; another value is a :class:`ConflictError`."""
        interrupt_id = interrupt.interrupt_id if isinstance(interrupt, Interrupt) else interrupt
        extra = {"override_reason": override_reason} if override_reason else {}
        return Queued.from_api(await self.api.resume_interrupt(interrupt_id, value, **extra))

    async def reject(self, interrupt: Interrupt | str, reason: str | None = None) -> Cancellation:
        """Reject an interrupt: the job is cancelled with ``reason``."""
        interrupt_id = interrupt.interrupt_id if isinstance(interrupt, Interrupt) else interrupt
        return Cancellation.from_api(await self.api.reject_interrupt(interrupt_id, reason))


class Client:
    """The synchronous client: the methods of :class:`AsyncClient`, blocking.

    Use it as ``with Client() as oris:`` (or call :meth:`close`)."""

    def __init__(
        self,
        server_url: str | None = None,
        *,
        api_token: str | None = None,
        api_key_id: str | None = None,
        api_key: str | None = None,
        request_timeout_seconds: float | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self._client = AsyncClient(
            server_url,
            api_token=api_token,
            api_key_id=api_key_id,
            api_key=api_key,
            request_timeout_seconds=request_timeout_seconds,
            settings=settings,
        )
        self.settings = self._client.settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="oris-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the connection pool and stop the client's event loop."""
        if self._closed:
            return
        try:
            self._call(self._client.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def submit(
        self,
        thread_id: str,
        input: Any = None,
        *,
        workflow: str | None = None,
        tenant_id: str | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        retry_policy: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        on_timeout: str | None = None,
        run_at: datetime | str | None = None,
        delay_ms: int | None = None,
    ) -> Queued:
        """See :meth:`AsyncClient.submit`."""
        return self._call(
            self._client.submit(
                thread_id,
                input,
                workflow=workflow,
                tenant_id=tenant_id,
                priority=priority,
                idempotency_key=idempotency_key,
                retry_policy=retry_policy,
                timeout_ms=timeout_ms,
                on_timeout=on_timeout,
                run_at=run_at,
                delay_ms=delay_ms,
            )
        )

    def submit_many(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> builtins.list[Queued]:
        """See :meth:`AsyncClient.submit_many`."""
        return self._call(self._client.submit_many(builtins.list(jobs)))

    def get(self, thread_id: str) -> Job:
        """See :meth:`AsyncClient.get`."""
        return self._call(self._client.get(thread_id))

    def wait(
        self,
        thread_id: str,
        timeout: float | None = DEFAULT_WAIT_SECONDS,
        *,
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
        until_interrupted: bool = False,
    ) -> Job:
        """See :meth:`AsyncClient.wait`."""
        return self._call(
            self._client.wait(
                thread_id,
                timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                until_interrupted=until_interrupted,
            )
        )

    def cancel(self, thread_id: str, reason: str | None = None) -> Cancellation:
        """See :meth:`AsyncClient.cancel`."""
        return self._call(self._client.cancel(thread_id, reason))

    def replay(
        self,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        override_reason: str | None = None,
    ) -> Queued:
        """See :meth:`AsyncClient.replay`."""
        return self._call(
            self._client.replay(
                thread_id, checkpoint_id=checkpoint_id, override_reason=override_reason
            )
        )

    def list(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: TimeBound = None,
        created_before: TimeBound = None,
        order: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        schedule_id: str | None = None,
    ) -> JobPage:
        """See :meth:`AsyncClient.list`."""
        return self._call(
            self._client.list(
                status=status,
                workflow=workflow,
                tenant_id=tenant_id,
                created_after=created_after,
                created_before=created_before,
                order=order,
                limit=limit,
                cursor=cursor,
                schedule_id=schedule_id,
            )
        )

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: TimeBound = None,
        created_before: TimeBound = None,
        order: str = "created",
        page_size: int = 200,
    ) -> Iterator[JobSummary]:
        """See :meth:`AsyncClient.iter_jobs` (pages are fetched as the iteration goes)."""
        cursor = None
        while True:
            page = self.list(
                status=status,
                workflow=workflow,
                tenant_id=tenant_id,
                created_after=created_after,
                created_before=created_before,
                order=order,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def interrupts(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = "pending",
        limit: int | None = None,
    ) -> builtins.list[Interrupt]:
        """See :meth:`AsyncClient.interrupts`."""
        return self._call(self._client.interrupts(thread_id=thread_id, status=status, limit=limit))

    def resume(
        self, interrupt: Interrupt | str, value: Any, *, override_reason: str | None = None
    ) -> Queued:
        """See :meth:`AsyncClient.resume`."""
        return self._call(self._client.resume(interrupt, value, override_reason=override_reason))

    def reject(self, interrupt: Interrupt | str, reason: str | None = None) -> Cancellation:
        """See :meth:`AsyncClient.reject`."""
        return self._call(self._client.reject(interrupt, reason))
