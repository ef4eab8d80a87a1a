"""What a workflow sees while it runs: checkpointed steps, interrupts, identity and a logger.

The checkpoint state this module writes is ``{"steps": {name: result, ...}}``. A step's name is
its key; the answer to the k-th ``interrupt()`` of a run is stored as the step ``interrupt:k``,
and the wake-up time of the k-th ``sleep()`` as the step ``sleep:k``.
Any other top-level keys found in a checkpoint are kept as they are.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from oris.worker.dispatch import Dispatch
from oris.worker.errors import Sleeping, Suspended, WorkflowError

STEPS_KEY = "steps"
INTERRUPT_PREFIX = "interrupt:"
SLEEP_PREFIX = "sleep:"
# Woken this close to its wake-up time by the worker's clock, a sleep is over: the server
# dispatched it by its own clock, which may run slightly ahead.
SLEEP_CLOCK_TOLERANCE = timedelta(seconds=1)
STEP_NAME_MAX_LENGTH = 128


class StepReporter(Protocol):
    """Persists a finished step: the new state becomes the attempt's latest checkpoint."""

    async def report_step(self, name: str, state: dict[str, Any]) -> None:
        """Store ``state`` as the checkpoint of step ``name``; raises ``LeaseLost`` when fenced."""
        ...


class WorkflowLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that adds the attempt's identity to every line, merged with ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the adapter's fields under the caller's ``extra`` (the caller's win)."""
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def json_value(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip, or ``WorkflowError`` naming ``what`` when it is not JSON."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise WorkflowError(f"{what} must be JSON-serialisable: {error}") from None
    return json.loads(text)


def initial_state(raw: Any) -> dict[str, Any]:
    """The state to start from: the checkpoint's dict with a ``steps`` mapping, else empty."""
    state = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    if not isinstance(state.get(STEPS_KEY), dict):
        state[STEPS_KEY] = {}
    return state


def _whole_milliseconds(moment: datetime) -> datetime:
    """``moment`` rounded up to a millisecond, the precision the checkpoint and server keep."""
    spare = moment.microsecond % 1000
    return moment if not spare else moment + timedelta(microseconds=1000 - spare)


class Context:
    """The handle a workflow function receives; one per attempt execution."""

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        worker_id: str,
        reporter: StepReporter,
        logger: logging.Logger | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._worker_id = worker_id
        self._reporter = reporter
        self._state = initial_state(dispatch.state)
        self._names_used: set[str] = set()
        self._interrupts_seen = 0
        self._sleeps_seen = 0
        self._resume_value_used = False
        self._record_lock = asyncio.Lock()
        self.log = WorkflowLogger(
            logger or logging.getLogger("oris.workflow"),
            {
                "thread_id": dispatch.thread_id,
                "attempt_id": dispatch.attempt_id,
                "attempt_no": dispatch.attempt_no,
                "worker_id": worker_id,
                "workflow": dispatch.workflow,
            },
        )

    @property
    def thread_id(self) -> str:
        """The job's thread id."""
        return self._dispatch.thread_id

    @property
    def attempt_id(self) -> str:
        """The attempt being executed (stable across retries and lease-expiry requeues)."""
        return self._dispatch.attempt_id

    @property
    def attempt_no(self) -> int:
        """The execution number of this attempt, 1 on the first try."""
        return self._dispatch.attempt_no

    @property
    def worker_id(self) -> str:
        """The worker executing the attempt."""
        return self._worker_id

    @property
    def workflow(self) -> str:
        """The workflow name the job was run with."""
        return self._dispatch.workflow

    @property
    def kind(self) -> str:
        """Why the attempt exists: ``run``, ``resume`` or ``replay``."""
        return self._dispatch.kind

    @property
    def input(self) -> Any:
        """The job's input (any JSON value)."""
        return self._dispatch.input

    @property
    def trace(self) -> dict[str, Any]:
        """The attempt's trace context as the server sent it (may be empty)."""
        return dict(self._dispatch.trace)

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the checkpoint state as it stands now."""
        return copy.deepcopy(self._state)

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` once per run: a step recorded in the checkpoint returns its stored result.

        ``fn`` may be sync (it runs in a thread, so heartbeats keep flowing) or async. The result
        must be JSON; the value returned is its JSON round trip, the same on first run and replay.
        """
        self._claim_name(name)
        steps = self._state[STEPS_KEY]
        if name in steps:
            self.log.info("step skipped: recorded in checkpoint", extra={"step": name})
            return copy.deepcopy(steps[name])
        if inspect.iscoroutinefunction(fn):
            result = await fn(*args, **kwargs)
        else:
            result = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        value = json_value(result, f"result of step {name!r}")
        await self._record(name, value)
        return copy.deepcopy(value)

    async def interrupt(self, value: Any) -> Any:
        """Wait for a human: returns the answer once given, else ends the attempt as interrupted."""
        self._interrupts_seen += 1
        key = f"{INTERRUPT_PREFIX}{self._interrupts_seen}"
        self._names_used.add(key)
        steps = self._state[STEPS_KEY]
        if key in steps:
            self.log.info("interrupt answered earlier", extra={"step": key})
            return copy.deepcopy(steps[key])
        if self._dispatch.has_resume_value and not self._resume_value_used:
            self._resume_value_used = True
            answer = json_value(self._dispatch.resume_value, "resume value")
            await self._record(key, answer)
            self.log.info("interrupt answered", extra={"step": key})
            return copy.deepcopy(answer)
        question = json_value(value, "interrupt value")
        self.log.info("interrupt opened", extra={"step": key})
        raise Suspended(question, key)

    async def sleep(self, duration: timedelta) -> None:
        """Sleep durably: the wake-up time is checkpointed, the attempt ends and frees the
        worker's slot, and the job is ``scheduled`` until then. It then continues right after
        this call, on any worker, with the steps before it not run again."""
        if not isinstance(duration, timedelta):
            raise WorkflowError("sleep() takes a datetime.timedelta")
        if duration < timedelta(0):
            raise WorkflowError("sleep() duration must not be negative")
        self._sleeps_seen += 1
        key = f"{SLEEP_PREFIX}{self._sleeps_seen}"
        self._names_used.add(key)
        steps = self._state[STEPS_KEY]
        now = datetime.now(UTC)
        recorded = steps.get(key)
        if isinstance(recorded, dict) and isinstance(recorded.get("wake_at"), str):
            wake_at = datetime.fromisoformat(recorded["wake_at"])
            if wake_at - now <= SLEEP_CLOCK_TOLERANCE:
                return  # woken up (or never needed to sleep)
        else:
            wake_at = _whole_milliseconds(now + duration)
            await self._record(key, {"wake_at": wake_at.isoformat(timespec="milliseconds")})
            if duration == timedelta(0):
                return
        self.log.info("sleeping", extra={"step": key, "wake_at": wake_at.isoformat()})
        raise Sleeping(key, wake_at)

    def _claim_name(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise WorkflowError("step name must be a non-empty string")
        if len(name) > STEP_NAME_MAX_LENGTH:
            raise WorkflowError(f"step name must be {STEP_NAME_MAX_LENGTH} characters or fewer")
        for prefix in (INTERRUPT_PREFIX, SLEEP_PREFIX):
            if name.startswith(prefix):
                raise WorkflowError(f"step names starting with {prefix!r} are reserved")
        if name in self._names_used:
            raise WorkflowError(
                f"step name {name!r} used twice; step names must be unique in a run"
            )
        self._names_used.add(name)

    async def _record(self, name: str, value: Any) -> None:
        # Steps may finish concurrently (asyncio.gather). One report at a time, each carrying
        # every result recorded before it, so the latest checkpoint never drops a step.
        async with self._record_lock:
            state = {**self._state, STEPS_KEY: {**self._state[STEPS_KEY], name: value}}
            await self._reporter.report_step(name, state)
            self._state = state
