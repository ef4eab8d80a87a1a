"""Acks travel together: with the worker's next poll, or batched among themselves.

When the worker's poll loop is waiting for a free slot, finished attempts' acks are *held* for
it: the loop wakes, takes them and sends them in its next poll (``acks`` in the poll body), so a
busy worker makes one request per round of work rather than two. Otherwise a lone ack goes to
``/ack``, carrying its job's ``traceparent``, and acks that pile up behind it are sent together to
``/acks`` (one transaction on the server for the plain ``completed`` ones). Each waiting attempt
gets its own answer or its own error, whichever way its ack travelled, so an attempt's retry and
fencing logic is the same. A server without ``/acks`` (an older version during a rolling upgrade)
answers 404 or 405, and one that ignores ``acks`` in a poll answers without ``data.acks``; the
worker then goes back to what that server understands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oris.client.http import ApiError, OrisClient

log = logging.getLogger("oris.worker")

MAX_ACK_BATCH = 100
LINGER_TURNS = 16
_NO_BATCH_ROUTE = frozenset({404, 405})


@dataclass(slots=True)
class PendingAck:
    """An ack waiting for its answer."""

    body: dict[str, Any]
    traceparent: str | None
    answer: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def wire(self) -> dict[str, Any]:
        """The ack as a batch item: its body and ``traceparent``, without null fields."""
        item = {k: v for k, v in self.body.items() if v is not None}
        if self.traceparent:
            item["traceparent"] = self.traceparent
        return item

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
        self._queue: list[PendingAck] = []
        self._sender: asyncio.Task[None] | None = None
        self._batch_route = True
        self._poll_route = True
        self._holder: Callable[[], None] | None = None
        self._side_senders: set[asyncio.Task[None]] = set()

    async def ack(self, body: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
        """Queue one ack (``attempt_id``, ``lease_id``, ``terminal_status``, …) and wait."""
        pending = PendingAck(body, traceparent)
        self._queue.append(pending)
        self._queued()
        return await pending.answer

    @property
    def carries(self) -> bool:
        """Whether polls may carry acks (false once the server has shown it ignores them)."""
        return self._poll_route

    def hold(self, wake: Callable[[], None]) -> None:
        """Keep new acks for the next poll to :meth:`collect`; ``wake`` is called on each."""
        self._holder = wake
        if self._queue:
            wake()

    def release(self) -> None:
        """Stop holding acks: whatever is queued is sent on its own."""
        self._holder = None
        if self._queue:
            self._start_sender()

    async def collect(self) -> list[PendingAck]:
        """The queued acks (at most a batch), after letting acks finishing together arrive."""
        await _linger(self._queue)
        batch = self._queue[:MAX_ACK_BATCH]
        del self._queue[:MAX_ACK_BATCH]
        return batch

    def carried(self, batch: list[PendingAck], data: dict[str, Any]) -> None:
        """Answer acks that travelled in a poll from its ``data``."""
        results = data.get("acks")
        if isinstance(results, list) and len(results) == len(batch):
            for pending, result in zip(batch, results, strict=True):
                _settle(pending, result)
            return
        if results is None:
            log.warning(
                "the server ignores acks in a poll; sending them on their own",
                extra={"worker_id": self._worker_id},
            )
            self._poll_route = False
        self.send_again(batch)

    def send_now(self, batch: list[PendingAck]) -> None:
        """Send acks taken for a poll that will not be made, on their own and at once.

        They do not go back to the queue: a poll loop still holding acks would only take them
        again. Each gets its answer or error as if it had travelled in a poll.
        """
        if not batch:
            return
        task = asyncio.create_task(self._send_all(list(batch)), name="oris-acks-now")
        self._side_senders.add(task)
        task.add_done_callback(self._side_senders.discard)

    def send_again(self, batch: list[PendingAck]) -> None:
        """Send acks whose poll failed on their own (a repeat is answered as the first)."""
        if batch:
            self._queue[:0] = batch
            self._queued()

    def _queued(self) -> None:
        """Acks were queued: wake the poll that holds them, or else the sender."""
        if self._holder is not None:
            self._holder()
        else:
            self._start_sender()

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="oris-acks")

    async def _send_queued(self) -> None:
        await _linger(self._queue)
        while self._queue:
            batch = self._queue[:MAX_ACK_BATCH]
            del self._queue[:MAX_ACK_BATCH]
            await self._send_all(batch)

    async def _send_all(self, batch: list[PendingAck]) -> None:
        """Send one batch; every ack in it ends with an answer or an error, never neither."""
        try:
            await self._send(batch)
        except BaseException as error:
            for pending in batch:
                pending.fail(error)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _send(self, batch: list[PendingAck]) -> None:
        if len(batch) > 1 and self._batch_route:
            try:
                results = await self._client.ack_many(
                    self._worker_id,
                    [p.wire() for p in batch],
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


async def _linger(queue: list[PendingAck]) -> None:
    """Acks of attempts dispatched together finish a few loop turns apart: keep yielding while
    more arrive (a bounded number of turns, microseconds each)."""
    for _ in range(LINGER_TURNS):
        queued = len(queue)
        await asyncio.sleep(0)
        if len(queue) == queued:
            break


def _settle(pending: PendingAck, result: Any) -> None:
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
