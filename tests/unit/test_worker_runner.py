"""The worker loop against an in-memory fake of the worker protocol (no sockets, no database)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from oris.config import WorkerSettings
from oris.worker import Context, PermanentError, Registry, RetryableError, Worker, runner
from oris.worker.builtins import builtin_registry

UNREACHABLE = 0  # a pseudo status: the fake server refuses the connection


def dispatch(workflow: str, input: Any = None, **fields: Any) -> dict[str, Any]:
    """A dispatch item as the poll endpoint sends it (short lease: fast heartbeats)."""
    item: dict[str, Any] = {
        "attempt_id": f"attempt-{workflow}",
        "lease_id": f"lease-{workflow}",
        "lease_expires_at": "2030-01-01T00:00:00.000+00:00",
        "lease_ttl_seconds": 0.3,
        "thread_id": f"thread-{workflow}",
        "run_no": 1,
        "workflow": workflow,
        "attempt_no": 1,
        "kind": "run",
        "input": input,
        "tenant_id": None,
        "priority": 0,
        "checkpoint": {"checkpoint_id": "cp-0", "state": {}},
        "resume_value": None,
        "has_resume_value": False,
        "trace": None,
    }
    item.update(fields)
    return item


class FakeServer:
    """Answers the worker endpoints from queued dispatches; records what the worker sent."""

    def __init__(self, *dispatches: dict[str, Any]) -> None:
        self.queue = list(dispatches)
        self.calls: list[tuple[str, Any]] = []
        self.failing: dict[str, list[int]] = {}
        self.polled_workflows: list[list[str]] = []
        self.poll_carries = True  # False: a server that ignores acks in a poll

    def fail(self, endpoint: str, *statuses: int) -> None:
        """Answer the next calls to ``endpoint`` with these errors (or ``UNREACHABLE``), in order."""
        self.failing.setdefault(endpoint, []).extend(statuses)

    def sent(self, endpoint: str) -> list[Any]:
        """Bodies the worker sent to ``endpoint`` (poll, heartbeat, report-step, ack)."""
        return [body for name, body in self.calls if name == endpoint]

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"null")
        endpoint = request.url.path.rsplit("/", 1)[-1]
        self.calls.append((endpoint, body))
        pending = self.failing.get(endpoint)
        if pending:
            status = pending.pop(0)
            if status == UNREACHABLE:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(
                status,
                json={"request_id": "r", "error": {"code": "fake", "message": f"fake {status}"}},
            )
        if endpoint == "poll":
            self.polled_workflows.append(body["workflows"])
            answers = None
            if "acks" in body and self.poll_carries:
                answers = [self.batch_item(item) for item in body["acks"]]
            batch, self.queue = self.queue[: body["limit"]], self.queue[body["limit"] :]
            decision = "dispatched" if batch else "noop"
            data = {"decision": decision, "dispatches": batch}
            return self.ok(data if answers is None else {**data, "acks": answers})
        if endpoint == "report-step":
            return self.ok({"status": "reported", "checkpoint_id": f"cp-{len(self.calls)}"})
        if endpoint == "ack":
            return self.ok(self.ack_answer(body))
        if endpoint == "acks":
            return self.ok({"results": [self.batch_item(item) for item in body["acks"]]})
        return self.ok({"lease_id": body.get("lease_id")})

    @staticmethod
    def ack_answer(body: dict[str, Any]) -> dict[str, Any]:
        status = body["terminal_status"]
        return {"status": "retry_scheduled" if status == "failed" else status}

    def batch_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """One item of a batch ack, recorded and failed like a single ack."""
        self.calls.append(("ack", item))
        pending = self.failing.get("ack")
        if pending:
            status = pending.pop(0)
            error = {"code": "fake", "message": f"fake {status}", "details": None}
            return {"attempt_id": item["attempt_id"], "ok": False, "status": status, "error": error}
        return {"attempt_id": item["attempt_id"], "ok": True, "data": self.ack_answer(item)}

    @staticmethod
    def ok(data: Any) -> httpx.Response:
        return httpx.Response(200, json={"request_id": "r", "meta": {}, "data": data})


def echoes(count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` echo dispatches with attempt ids ``a-<n>`` and lease ids ``l-<n>``."""
    return [
        dispatch("echo", n, attempt_id=f"a-{n}", lease_id=f"l-{n}", **fields) for n in range(count)
    ]


def make_worker(server: FakeServer, registry: Registry | None = None, **settings: Any) -> Worker:
    values: dict[str, Any] = {
        "server_url": "http://oris.test",
        "worker_id": "w-unit",
        "worker_concurrency": 2,
        "worker_poll_max_interval_seconds": 0.05,
        "worker_shutdown_grace_seconds": 5,
        **settings,
    }
    return Worker(
        WorkerSettings(**values),
        builtin_registry() if registry is None else registry,
        transport=httpx.MockTransport(server.handle),
    )


async def eventually(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    """Yield to the loop until ``predicate`` holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.01)
    return value


async def run_until(worker: Worker, predicate: Callable[[], Any]) -> None:
    """Run the worker until ``predicate`` holds, then shut it down and wait for it."""
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: predicate() or task.done())
        assert not task.done(), task.exception()
    finally:
        worker.shutdown()
        await asyncio.wait_for(task, 10)


async def test_completed_workflow_is_acked_with_its_output() -> None:
    server = FakeServer(dispatch("echo", {"a": 1}))
    await run_until(make_worker(server), lambda: server.sent("ack"))
    assert server.sent("ack") == [
        {
            "attempt_id": "attempt-echo",
            "lease_id": "lease-echo",
            "terminal_status": "completed",
            "output": {"output": {"a": 1}},
        }
    ]
    assert server.polled_workflows[0] == builtin_registry().names()


async def test_steps_are_reported_with_checkpoint_and_dedupe_token() -> None:
    server = FakeServer(dispatch("steps", {"steps": 2, "sleep_ms": 0}))
    await run_until(make_worker(server), lambda: server.sent("ack"))
    reports = server.sent("report-step")
    assert [r["dedupe_token"] for r in reports] == [
        "attempt-steps:1:step_1",
        "attempt-steps:1:step_2",
    ]
    assert reports[1]["checkpoint"]["step"] == "step_2"
    assert sorted(reports[1]["checkpoint"]["state"]["steps"]) == ["step_1", "step_2"]
    assert reports[1]["lease_id"] == "lease-steps"


async def test_interrupt_is_acked_as_interrupted_with_its_key() -> None:
    server = FakeServer(dispatch("approval", "doc"))
    await run_until(make_worker(server), lambda: server.sent("ack"))
    (ack,) = server.sent("ack")
    assert ack["terminal_status"] == "interrupted"
    assert ack["interrupt"]["step"] == "interrupt:1"
    assert ack["interrupt"]["value"]["draft"] == "doc"


async def test_unknown_workflow_fails_without_retry() -> None:
    server = FakeServer(dispatch("ghost"))
    await run_until(make_worker(server), lambda: server.sent("ack"))
    (ack,) = server.sent("ack")
    assert ack["terminal_status"] == "failed"
    assert ack["error"]["retryable"] is False
    assert ack["error"]["type"] == "UnknownWorkflow"


async def test_errors_say_whether_and_when_to_retry() -> None:
    registry = Registry()

    @registry.workflow("later")
    async def later(ctx: Context, input: Any) -> Any:
        raise RetryableError("busy", delay_ms=1234)

    @registry.workflow("never")
    async def never(ctx: Context, input: Any) -> Any:
        raise PermanentError("bad input")

    @registry.workflow("oops")
    async def oops(ctx: Context, input: Any) -> Any:
        found: dict[str, int] = {}
        return found["missing"]

    server = FakeServer(dispatch("later"), dispatch("never"), dispatch("oops"))
    await run_until(make_worker(server, registry), lambda: len(server.sent("ack")) == 3)
    errors = {ack["attempt_id"]: ack["error"] for ack in server.sent("ack")}
    assert errors["attempt-later"]["retry_delay_ms"] == 1234
    assert errors["attempt-later"]["retryable"] is True
    assert errors["attempt-never"]["retryable"] is False
    assert errors["attempt-oops"] == {"message": "'missing'", "type": "KeyError", "retryable": True}


async def test_heartbeat_conflict_cancels_the_handler_and_nothing_more_is_sent() -> None:
    server = FakeServer(dispatch("sleep", {"ms": 60_000}))
    server.fail("heartbeat", 409)
    worker = make_worker(server)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: server.sent("heartbeat") and worker.active_attempts == 0)
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert len(server.sent("heartbeat")) == 1
    assert server.sent("ack") == []


async def test_step_report_conflict_stops_the_workflow() -> None:
    server = FakeServer(dispatch("steps", {"steps": 3, "sleep_ms": 0}))
    server.fail("report-step", 409)
    worker = make_worker(server)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: server.sent("report-step") and worker.active_attempts == 0)
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert len(server.sent("report-step")) == 1
    assert server.sent("ack") == []


async def test_transient_failures_are_retried_not_fatal() -> None:
    server = FakeServer(dispatch("steps", {"steps": 1, "sleep_ms": 0}))
    server.fail("poll", UNREACHABLE, 503, 429)
    server.fail("report-step", 502)
    server.fail("ack", UNREACHABLE, 503)
    await run_until(make_worker(server), lambda: len(server.sent("ack")) == 3)
    reports = server.sent("report-step")
    assert len(reports) == 2
    assert reports[0] == reports[1]  # the same token and payload: the server dedupes it
    assert server.sent("ack")[-1]["terminal_status"] == "completed"


async def test_a_heartbeat_that_cannot_reach_the_server_does_not_give_up_the_attempt() -> None:
    server = FakeServer(dispatch("sleep", {"ms": 60_000}))
    server.fail("heartbeat", UNREACHABLE, 503)
    worker = make_worker(server, worker_shutdown_grace_seconds=0)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: len(server.sent("heartbeat")) >= 3)
    assert worker.active_attempts == 1
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert server.sent("ack") == []


async def test_polls_ask_only_for_free_slots() -> None:
    server = FakeServer(*(dispatch("sleep", {"ms": 60_000}, attempt_id=f"a{i}") for i in range(3)))
    worker = make_worker(server, worker_concurrency=2, worker_shutdown_grace_seconds=0)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.active_attempts == 2)
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert server.sent("poll")[0]["limit"] == 2
    assert len(server.queue) == 1


async def test_shutdown_lets_running_attempts_finish_and_is_idempotent() -> None:
    server = FakeServer(dispatch("sleep", {"ms": 200}))
    worker = make_worker(server)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.active_attempts == 1)
    worker.shutdown()
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert [ack["terminal_status"] for ack in server.sent("ack")] == ["completed"]
    polls = len(server.sent("poll"))
    await asyncio.sleep(0.1)
    assert len(server.sent("poll")) == polls


async def test_shutdown_cancels_attempts_that_outlive_the_grace_period() -> None:
    server = FakeServer(dispatch("sleep", {"ms": 60_000}))
    worker = make_worker(server, worker_shutdown_grace_seconds=0.05)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.active_attempts == 1)
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert worker.active_attempts == 0
    assert server.sent("ack") == []


def test_a_worker_needs_at_least_one_workflow() -> None:
    with pytest.raises(ValueError, match="no workflows"):
        make_worker(FakeServer(), Registry())


async def test_acks_that_pile_up_travel_in_one_request() -> None:
    server = FakeServer(*echoes(6))
    server.poll_carries = False
    await run_until(make_worker(server, worker_concurrency=6), lambda: len(server.sent("ack")) == 6)
    assert sorted(a["attempt_id"] for a in server.sent("ack")) == [f"a-{n}" for n in range(6)]
    assert all(a["lease_id"] == "l-" + a["attempt_id"][2:] for a in server.sent("ack"))
    batches = server.sent("acks")
    assert batches, "six acks finishing together should share a request"
    assert all(len(batch["acks"]) > 1 for batch in batches)


async def test_a_server_without_batch_acks_gets_single_acks() -> None:
    server = FakeServer(*echoes(6))
    server.poll_carries = False
    server.fail("acks", 404)
    await run_until(make_worker(server, worker_concurrency=6), lambda: len(server.sent("ack")) == 6)
    assert len(server.sent("acks")) == 1  # tried once, then never again
    assert sorted(a["attempt_id"] for a in server.sent("ack")) == [f"a-{n}" for n in range(6)]


def carried_acks(server: FakeServer) -> list[dict[str, Any]]:
    return [item for poll in server.sent("poll") for item in poll.get("acks", [])]


async def test_a_busy_worker_sends_its_acks_with_the_next_poll() -> None:
    server = FakeServer(*echoes(9, trace={}))
    await run_until(make_worker(server, worker_concurrency=3), lambda: len(server.sent("ack")) == 9)
    assert sorted(a["attempt_id"] for a in server.sent("ack")) == [f"a-{n}" for n in range(9)]
    # Every slot was busy after each poll, so each round's acks rode on the next poll, which
    # asked for their slots too; nothing went to /ack or /acks.
    assert [a["attempt_id"] for a in carried_acks(server)] == [f"a-{n}" for n in range(9)]
    polls = server.sent("poll")
    assert [len(p.get("acks", [])) for p in polls[:4]] == [0, 3, 3, 3]
    assert [p["limit"] for p in polls[:4]] == [3, 3, 3, 3]
    assert all("wait_ms" not in p for p in polls if p.get("acks"))
    assert server.sent("acks") == []
    assert [name for name, _ in server.calls].count("ack") == 9


async def test_a_server_that_ignores_acks_in_polls_gets_them_again() -> None:
    server = FakeServer(*echoes(6))
    server.poll_carries = False
    await run_until(make_worker(server, worker_concurrency=2), lambda: len(server.sent("ack")) == 6)
    assert sorted(a["attempt_id"] for a in server.sent("ack")) == [f"a-{n}" for n in range(6)]
    assert len(carried_acks(server)) == 2  # one poll tried, then never again


@pytest.mark.parametrize("failure", [503, UNREACHABLE])
async def test_acks_of_a_failed_poll_are_sent_on_their_own(failure: int) -> None:
    items = [
        dict(dispatch("sleep", {"ms": 100}), attempt_id=f"a-{n}", lease_id=f"l-{n}")
        for n in range(2)
    ]
    server = FakeServer(*items)
    worker = make_worker(server, worker_concurrency=2)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: len(server.sent("poll")) >= 1)
    server.fail("poll", failure)  # the next poll, which carries both acks
    await eventually(lambda: len(server.sent("ack")) == 2)
    await eventually(lambda: worker.active_attempts == 0)
    worker.shutdown()
    await asyncio.wait_for(task, 10)
    assert len(server.sent("poll")[1]["acks"]) == 2  # the failed poll carried them
    assert sorted(a["attempt_id"] for a in server.sent("ack")) == ["a-0", "a-1"]


async def test_a_dispatched_handler_starts_before_the_next_poll_is_sent() -> None:
    server = FakeServer(dispatch("mark"))
    polls_when_started: list[int] = []
    registry = Registry()

    @registry.workflow("mark")
    async def mark(ctx: Context, input: Any) -> Any:
        polls_when_started.append(len(server.sent("poll")))
        return None

    await run_until(make_worker(server, registry), lambda: server.sent("ack"))
    assert polls_when_started == [1], "the handler waited behind the next poll's request"


def gated(gates: dict[str, asyncio.Event]) -> Registry:
    """``gate`` waits for ``gates[input]`` (created on first use), then completes; ``echo``."""
    registry = Registry()

    @registry.workflow("gate")
    async def gate(ctx: Context, input: Any) -> Any:
        await gates.setdefault(str(input), asyncio.Event()).wait()
        return {"gate": input}

    @registry.workflow("echo")
    async def echo(ctx: Context, input: Any) -> Any:
        return {"output": input}

    return registry


async def test_an_ack_taken_while_every_slot_is_still_busy_is_sent_not_dropped() -> None:
    # One slot. The first attempt's ack rides on a poll that answers it with a 503 and hands
    # out a second attempt in the slot: while the first retries its ack, two attempts hold the
    # one slot. The retried ack is then taken for a poll that has no slot to ask for; it must
    # still be sent (it was dropped, leaving the job running and its lease heartbeated).
    gates: dict[str, asyncio.Event] = {}
    server = FakeServer(
        dispatch("echo", 1, attempt_id="a-first", lease_id="l-first", lease_ttl_seconds=60),
        dispatch("gate", "second", attempt_id="a-second", lease_id="l-second"),
    )
    server.fail("ack", 503)  # the first ack item, carried by the second poll

    def acks_of(attempt: str) -> list[dict[str, Any]]:
        return [a for a in server.sent("ack") if a["attempt_id"] == attempt]

    worker = make_worker(server, gated(gates), worker_concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len(acks_of("a-first")) == 2)
        await eventually(lambda: worker.active_attempts == 1)
        gates.setdefault("second", asyncio.Event()).set()
        await eventually(lambda: acks_of("a-second") and worker.active_attempts == 0)
    finally:
        worker.shutdown()
        await asyncio.wait_for(task, 10)
    assert [a["terminal_status"] for a in acks_of("a-first")] == ["completed", "completed"]
    assert server.sent("poll")[1]["acks"][0]["attempt_id"] == "a-first"


async def test_a_finished_attempt_stops_heartbeating_while_its_ack_is_under_way() -> None:
    # "a-slow" keeps running and heartbeating; "a-done" finishes at once, and its ack (carried
    # by the next poll) is held by the server. While it is held, the running attempt sends three
    # heartbeats (two heartbeat intervals at least): the finished one sends none.
    release = asyncio.Event()
    gates: dict[str, asyncio.Event] = {}
    server = FakeServer(
        dispatch("gate", "slow", attempt_id="a-slow", lease_id="l-slow"),
        dispatch("echo", 1, attempt_id="a-done", lease_id="l-done"),
    )
    finished_at: list[int] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"null")
        carried = [item["attempt_id"] for item in (body or {}).get("acks", [])]
        if "a-done" in carried or (isinstance(body, dict) and body.get("attempt_id") == "a-done"):
            finished_at.append(len(server.calls))
            await release.wait()
        return server.handle(request)

    worker = Worker(
        WorkerSettings(
            server_url="http://oris.test",
            worker_id="w-unit",
            worker_concurrency=2,
            worker_poll_max_interval_seconds=0.05,
        ),
        gated(gates),
        transport=httpx.MockTransport(handle),
    )
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: finished_at)

        def beats(lease: str) -> list[int]:
            return [
                n
                for n, (name, body) in enumerate(server.calls)
                if name == "heartbeat" and body["lease_id"] == lease and n >= finished_at[0]
            ]

        await eventually(lambda: len(beats("l-slow")) >= 3)
        assert beats("l-done") == []
        release.set()
        await eventually(lambda: any(a["attempt_id"] == "a-done" for a in server.sent("ack")))
        gates.setdefault("slow", asyncio.Event()).set()
        await eventually(lambda: worker.active_attempts == 0)
    finally:
        release.set()
        worker.shutdown()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_back_off_exponentially_and_log_once_per_step(
    status: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "AUTH_BACKOFF_INITIAL_SECONDS", 0.005)
    server = FakeServer(dispatch("echo", 1))
    server.fail("poll", *[status] * 9)
    worker = make_worker(server, worker_auth_backoff_max_seconds=0.04)
    with caplog.at_level(logging.INFO, logger="oris.worker"):
        await run_until(worker, lambda: server.sent("ack"))
    assert len(server.sent("poll")) >= 10  # nine refusals, then the poll that dispatched
    refused = [r for r in caplog.records if r.getMessage().startswith("poll refused")]
    # 0.005, 0.01, 0.02, then 0.04 (the cap) for the six refusals after: four lines, not nine.
    assert [r.__dict__["backoff_seconds"] for r in refused] == [0.005, 0.01, 0.02, 0.04]
    assert all(r.levelno == logging.ERROR for r in refused)
    assert "further refusals are not logged" in refused[-1].getMessage()
    assert [r.__dict__["status"] for r in refused] == [status] * 4
    assert not [r for r in caplog.records if r.getMessage() == "poll failed; will try again"]
    assert [r.getMessage() for r in caplog.records].count(
        "poll accepted again: credentials work"
    ) == 1


async def test_polls_carry_the_declared_workflow_defaults() -> None:
    registry = Registry()
    policy = {"strategy": "fixed", "backoff_ms": 10, "max_retries": 2}

    @registry.workflow("echo", retry_policy=policy, timeout_ms=1000)
    async def echo(ctx: Context, input: Any) -> Any:
        return input

    @registry.workflow("other")
    async def other(ctx: Context, input: Any) -> Any:
        return input

    server = FakeServer(dispatch("echo", 1))
    await run_until(make_worker(server, registry), lambda: server.sent("ack"))
    assert all(
        p["workflow_defaults"] == {"echo": {"retry_policy": policy, "timeout_ms": 1000}}
        for p in server.sent("poll")
    )
    server = FakeServer(dispatch("echo", 1))
    await run_until(make_worker(server), lambda: server.sent("ack"))
    assert all("workflow_defaults" not in p for p in server.sent("poll"))
