"""Built-in workflows: what a worker runs without ``--app``, and what tests and drills rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from oris.worker.context import Context
from oris.worker.errors import PermanentError, RetryableError
from oris.worker.registry import Registry


def _field(input: Any, key: str, kind: type, default: Any = None) -> Any:
    """A typed field of a dict input; a missing or mistyped field fails the job permanently."""
    value = input.get(key, default) if isinstance(input, dict) else default
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise PermanentError(f"input.{key} must be {kind.__name__}, got {value!r}")
    return value


async def echo(ctx: Context, input: Any) -> Any:
    """Complete with ``{"output": input}``."""
    return {"output": input}


async def steps(ctx: Context, input: Any) -> Any:
    """Run ``input.steps`` checkpointed steps ``step_1..step_n``, each sleeping ``sleep_ms``."""
    count = _field(input, "steps", int)
    sleep_ms = _field(input, "sleep_ms", int, 0)

    async def one(index: int) -> dict[str, Any]:
        await asyncio.sleep(sleep_ms / 1000)
        return {"index": index, "worker_id": ctx.worker_id, "attempt_no": ctx.attempt_no}

    for index in range(1, count + 1):
        await ctx.step(f"step_{index}", one, index)
    return ctx.state


async def approval(ctx: Context, input: Any) -> Any:
    """Draft, then wait for a human; complete with ``{"approved": <resume value>}``."""

    async def draft() -> dict[str, Any]:
        return {"draft": input}

    drafted = await ctx.step("draft", draft)
    answer = await ctx.interrupt({"question": "approve this draft?", **drafted})
    return {"approved": answer}


async def flaky(ctx: Context, input: Any) -> Any:
    """Fail (retryable) on executions ``1..fail_times``, then complete."""
    fail_times = _field(input, "fail_times", int, 1)
    if ctx.attempt_no <= fail_times:
        raise RetryableError(f"flaky: execution {ctx.attempt_no} of {fail_times} planned failures")
    return {"attempt_no": ctx.attempt_no}


async def fail(ctx: Context, input: Any) -> Any:
    """Always fail with a retryable error."""
    raise RetryableError(f"fail: execution {ctx.attempt_no} failed on purpose")


async def sleep(ctx: Context, input: Any) -> Any:
    """Sleep ``input.ms`` milliseconds (heartbeats keep the lease), then complete."""
    ms = _field(input, "ms", int, 0)
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


async def side_effect(ctx: Context, input: Any) -> Any:
    """One step that appends ``"<thread_id> <attempt_id> <attempt_no>"`` to ``input.ledger``."""
    ledger = Path(_field(input, "ledger", str))
    line = f"{ctx.thread_id} {ctx.attempt_id} {ctx.attempt_no}\n"

    def append() -> str:
        with ledger.open("a", encoding="utf-8") as handle:
            handle.write(line)
        return line.strip()

    return {"effect": await ctx.step("effect", append)}


def builtin_registry() -> Registry:
    """A new registry with the seven built-in workflows (echo, steps, approval, flaky, ...)."""
    registry = Registry()
    for name, fn in (
        ("echo", echo),
        ("steps", steps),
        ("approval", approval),
        ("flaky", flaky),
        ("fail", fail),
        ("sleep", sleep),
        ("side_effect", side_effect),
    ):
        registry.add(name, fn)
    return registry
