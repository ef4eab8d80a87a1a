"""The workflow context's bookkeeping: steps run once per run, interrupts, errors (no I/O)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oris.worker.context import Context, initial_state
from oris.worker.dispatch import Dispatch
from oris.worker.errors import Sleeping, Suspended, WorkflowError


class RecordingReporter:
    """Keeps every step report instead of sending it."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    async def report_step(self, name: str, state: dict[str, Any]) -> None:
        self.reports.append((name, state))


def make_context(
    state: Any = None, *, resume: tuple[Any] | None = None
) -> tuple[Context, RecordingReporter]:
    dispatch = Dispatch(
        attempt_id="attempt-t-1",
        lease_id="lease-1",
        thread_id="t",
        workflow="wf",
        attempt_no=1,
        lease_ttl_seconds=30,
        state=state,
        has_resume_value=resume is not None,
        resume_value=None if resume is None else resume[0],
    )
    reporter = RecordingReporter()
    return Context(dispatch, worker_id="w-1", reporter=reporter), reporter


async def test_a_step_runs_and_its_result_becomes_the_checkpoint_state() -> None:
    ctx, reporter = make_context({})
    calls: list[int] = []

    async def add(a: int, b: int) -> int:
        calls.append(1)
        return a + b

    assert await ctx.step("add", add, 2, b=3) == 5
    assert calls == [1]
    assert reporter.reports == [("add", {"steps": {"add": 5}})]
    assert ctx.state == {"steps": {"add": 5}}


async def test_a_step_recorded_in_the_checkpoint_is_not_run_again() -> None:
    ctx, reporter = make_context({"steps": {"fetch": {"rows": 3}}})

    def explode() -> None:
        raise AssertionError("a recorded step must not run")

    assert await ctx.step("fetch", explode) == {"rows": 3}
    assert reporter.reports == []


async def test_steps_accumulate_in_order_of_completion() -> None:
    ctx, reporter = make_context({"steps": {"one": 1}, "note": "kept"})
    await ctx.step("one", lambda: 100)
    await ctx.step("two", lambda: 2)
    assert reporter.reports == [("two", {"steps": {"one": 1, "two": 2}, "note": "kept"})]


async def test_concurrent_steps_never_drop_each_other_from_the_checkpoint() -> None:
    ctx, reporter = make_context()

    async def value(n: int) -> int:
        await asyncio.sleep(0.001 * (5 - n))
        return n

    results = await asyncio.gather(*(ctx.step(f"part_{n}", value, n) for n in range(5)))
    assert results == [0, 1, 2, 3, 4]
    sizes = [len(state["steps"]) for _, state in reporter.reports]
    assert sizes == [1, 2, 3, 4, 5]
    assert reporter.reports[-1][1]["steps"] == {f"part_{n}": n for n in range(5)}


async def test_sync_functions_and_functions_returning_awaitables_both_work() -> None:
    ctx, _ = make_context()

    async def later() -> str:
        return "async"

    assert await ctx.step("sync", lambda: "sync") == "sync"
    assert await ctx.step("deferred", lambda: later()) == "async"


async def test_results_come_back_as_their_json_round_trip() -> None:
    ctx, reporter = make_context()
    assert await ctx.step("pair", lambda: (1, 2)) == [1, 2]
    assert reporter.reports[0][1]["steps"]["pair"] == [1, 2]


async def test_a_result_that_is_not_json_fails_permanently_and_reports_nothing() -> None:
    ctx, reporter = make_context()
    with pytest.raises(WorkflowError, match="JSON-serialisable"):
        await ctx.step("bad", lambda: {1, 2})
    with pytest.raises(WorkflowError, match="JSON-serialisable"):
        await ctx.step("nan", lambda: float("nan"))
    assert reporter.reports == []


async def test_a_step_name_may_be_used_once_per_run() -> None:
    ctx, _ = make_context({"steps": {"a": 1}})
    await ctx.step("a", lambda: 1)
    with pytest.raises(WorkflowError, match="used twice"):
        await ctx.step("a", lambda: 1)


@pytest.mark.parametrize("name", ["", "   ", "interrupt:1", "x" * 129])
async def test_invalid_step_names_are_refused(name: str) -> None:
    ctx, _ = make_context()
    with pytest.raises(WorkflowError):
        await ctx.step(name, lambda: 1)


async def test_an_interrupt_without_an_answer_suspends_the_run() -> None:
    ctx, reporter = make_context({"steps": {"draft": "text"}})
    with pytest.raises(Suspended) as raised:
        await ctx.interrupt({"question": "ok?"})
    assert raised.value.key == "interrupt:1"
    assert raised.value.value == {"question": "ok?"}
    assert reporter.reports == []


async def test_the_resume_value_answers_the_first_open_interrupt_and_is_recorded() -> None:
    ctx, reporter = make_context({"steps": {"draft": "text"}}, resume=("yes",))
    assert await ctx.interrupt("ok?") == "yes"
    assert reporter.reports == [("interrupt:1", {"steps": {"draft": "text", "interrupt:1": "yes"}})]
    with pytest.raises(Suspended) as raised:
        await ctx.interrupt("and this?")
    assert raised.value.key == "interrupt:2"


async def test_answered_interrupts_replay_from_the_checkpoint() -> None:
    ctx, reporter = make_context({"steps": {"interrupt:1": "first"}}, resume=("second",))
    assert await ctx.interrupt("q1") == "first"
    assert await ctx.interrupt("q2") == "second"
    assert [name for name, _ in reporter.reports] == ["interrupt:2"]


async def test_an_interrupt_value_must_be_json() -> None:
    ctx, _ = make_context()
    with pytest.raises(WorkflowError):
        await ctx.interrupt(object())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {"steps": {}}),
        ({}, {"steps": {}}),
        ([1, 2], {"steps": {}}),
        ({"steps": "broken", "x": 1}, {"steps": {}, "x": 1}),
        ({"steps": {"a": 1}}, {"steps": {"a": 1}}),
    ],
)
def test_initial_state_always_has_a_steps_mapping(raw: Any, expected: dict[str, Any]) -> None:
    assert initial_state(raw) == expected


def test_identity_properties_come_from_the_dispatch() -> None:
    ctx, _ = make_context()
    assert (ctx.thread_id, ctx.attempt_id, ctx.attempt_no, ctx.worker_id) == (
        "t",
        "attempt-t-1",
        1,
        "w-1",
    )
    assert ctx.trace == {}


def test_the_log_adapter_adds_identity_and_keeps_caller_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx, _ = make_context()
    with caplog.at_level(logging.INFO, logger="oris.workflow"):
        ctx.log.info("hello", extra={"custom": 7})
    record = caplog.records[-1]
    assert record.__dict__["thread_id"] == "t"
    assert record.__dict__["worker_id"] == "w-1"
    assert record.__dict__["custom"] == 7


async def test_a_sleep_checkpoints_its_wake_up_time_and_ends_the_attempt() -> None:
    ctx, reporter = make_context({"steps": {"before": 1}})
    started = datetime.now(UTC)
    with pytest.raises(Sleeping) as raised:
        await ctx.sleep(timedelta(minutes=5))
    assert raised.value.key == "sleep:1"
    assert raised.value.wake_at - started >= timedelta(minutes=5)
    name, state = reporter.reports[-1]
    assert name == "sleep:1"
    assert datetime.fromisoformat(state["steps"]["sleep:1"]["wake_at"]) == raised.value.wake_at
    assert state["steps"]["before"] == 1


async def test_a_sleep_whose_time_has_come_returns_and_one_not_yet_due_sleeps_on() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    ctx, reporter = make_context({"steps": {"sleep:1": {"wake_at": past}}})
    await ctx.sleep(timedelta(hours=1))  # the recorded time decides, not the new duration
    assert reporter.reports == []
    future = datetime.now(UTC) + timedelta(minutes=10)
    ctx, reporter = make_context({"steps": {"sleep:1": {"wake_at": future.isoformat()}}})
    with pytest.raises(Sleeping) as raised:
        await ctx.sleep(timedelta(seconds=1))
    assert raised.value.wake_at == future
    assert reporter.reports == []


async def test_a_zero_sleep_returns_at_once_and_bad_durations_are_refused() -> None:
    ctx, reporter = make_context({})
    await ctx.sleep(timedelta(0))
    assert [name for name, _ in reporter.reports] == ["sleep:1"]
    with pytest.raises(WorkflowError):
        await ctx.sleep(timedelta(seconds=-1))
    with pytest.raises(WorkflowError):
        await ctx.sleep(5)  # type: ignore[arg-type]
    with pytest.raises(WorkflowError):
        await ctx.step("sleep:9", lambda: 1)
