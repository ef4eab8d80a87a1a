"""Acks that finish while another ack is on the wire travel together in one request.

A lone ack goes to ``/ack`` as before, carrying its job's ``traceparent``. Acks that pile up
behind it are sent together to ``/acks`` (one transaction on the server for the plain
``completed`` ones); each waiting attempt gets its own answer or its own error, so an attempt's
retry and fencing logic is the same either way. A server without ``/acks`` (an older version
during a rolling upgrade) answers 404 or 405; the worker then goes back to single acks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from oris.client.http import ApiError, OrisClient

log = logging.getLogger("oris.worker")

MAX_ACK_BATCH = 100
LINGER_TURNS = 16
_NO_BATCH_ROUTE = frozenset({404, 405})


@dataclass(slots=True)
class _Pending:
    body: dict[str, Any]
    traceparent: str | None
    answer: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, data: dict[str, Any]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def fail(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class AckBatcher:
    """One per worker process; :meth:`ack` raises what ``OrisClient.ack`` would raise."""

    def __init__(self, client: OrisClient, worker_id: str) -> None:
        self._client = client
        self._worker_id = worker_id
        self._queue: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None
        self._batch_route = True

    async def ack(self, body: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
        """Queue one ack (``attempt_id``, ``lease_id``, ``terminal_status``, …) and wait."""
        pending = _Pending(body, traceparent)
        self._queue.append(pending)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="oris-acks")
        return await pending.answer

    async def _send_queued(self) -> None:
        # Acks of attempts dispatched together finish a few loop turns apart: keep yielding while
        # more arrive (a bounded number of turns, microseconds each), then send them together.
        for _ in range(LINGER_TURNS):
            queued = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                break
        while self._queue:
            batch = self._queue[:MAX_ACK_BATCH]
            del self._queue[:MAX_ACK_BATCH]
            try:
                await self._send(batch)
            except BaseException as error:
                for pending in batch:
                    pending.fail(error)
                if isinstance(error, asyncio.CancelledError):
                    raise

    async def _send(self, batch: list[_Pending]) -> None:
        if len(batch) > 1 and self._batch_route:
            try:
                results = await self._client.ack_many(
                    self._worker_id,
                    [{**p.body, "traceparent": p.traceparent} for p in batch],
                )
            except ApiError as error:
                if error.status not in _NO_BATCH_ROUTE:
                    raise
                log.warning(
                    "the server has no batch ack endpoint; acking one at a time",
                    extra={"worker_id": self._worker_id, "status": error.status},
                )
                self._batch_route = False
            else:
                for pending, result in zip(batch, results, strict=True):
                    _settle(pending, result)
                return
        for pending in batch:
            try:
                pending.resolve(
                    await self._client.ack(
                        self._worker_id, traceparent=pending.traceparent, **pending.body
                    )
                )
            except Exception as error:
                pending.fail(error)


def _settle(pending: _Pending, result: Any) -> None:
    if (
        isinstance(result, dict)
        and result.get("ok") is True
        and isinstance(result.get("data"), dict)
    ):
        pending.resolve(result["data"])
        return
    error = result.get("error") if isinstance(result, dict) else None
    if not isinstance(error, dict):
        pending.fail(
            ApiError(200, "unexpected_response", f"malformed ack result: {result!r}", None)
        )
        return
    status = result.get("status")
    pending.fail(
        ApiError(
            status if isinstance(status, int) else 500,
            str(error.get("code", "internal")),
            str(error.get("message", "")),
            None,
            error.get("details"),
        )
    )
